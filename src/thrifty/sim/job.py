"""One simulated job: it trains at the true speed its profile gives and learns its own model.

The job advances in scale-invariant iterations (progress): each optimizer step at total batch M
counts `gain(M)` initial-batch steps, so an epoch means the same progress at any batch size. It
fits its throughput model from the configurations it actually ran, exactly as a live job would,
and re-chooses its batch size at every epoch and re-allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from thrifty.goodput import (
    BatchLimits,
    GoodputModel,
    GradientStats,
    StepObservation,
    ThroughputParams,
    fit_throughput,
    split_batch,
)
from thrifty.policy.base import Allocation, JobView
from thrifty.policy.views import job_view
from thrifty.sim.cluster import ClusterSpec
from thrifty.sim.profiles import AppProfile
from thrifty.sim.workload import TraceJob

# Applications whose adaptive runs keep a fixed batch and one GPU in the Pollux artifact (ncf's
# step time hardly depends on the batch, and its profile covers one GPU well).
FIXED_ADAPTIVE: dict[str, tuple[int, int]] = {"ncf": (32768, 1)}
_ANY_KIND = "*"


@dataclass
class SimJob:
    spec: TraceJob
    profile: AppProfile
    cluster: ClusterSpec
    adaptive: bool
    merge_kinds: bool = False  # heterogeneity-unaware policies: one model for every kind
    max_replicas_cap: int = 64
    allocation: Allocation | None = None
    atomic_bsz: int = 0
    accum_steps: int = 0
    progress: float = 0.0
    epoch: int = 0
    attained_service: float = 0.0  # GPU-seconds, restart delays included
    gpu_seconds: dict[str, float] = field(default_factory=dict)
    restarts: int | None = None  # None until first started; later changes count
    restart_left: float = 0.0
    completion_time: float | None = None
    stalled_seconds: float = 0.0  # allocated but on a configuration the profile cannot run
    observations: dict[str, dict[tuple[int, int, int], tuple[float, float]]] = field(
        default_factory=dict
    )
    grad: tuple[float, float] | None = None
    _params: dict[str, ThroughputParams] = field(default_factory=dict)
    _stale: set[str] = field(default_factory=set)
    _model: GoodputModel | None = None

    def __post_init__(self) -> None:
        app = self.spec.application
        kinds = self.profile.kinds.values()
        self.limits = BatchLimits(
            init_batch_size=self.profile.init_batch_size,
            max_batch_size=self.profile.max_batch_size,
            min_local_bsz=min(k.min_local_bsz for k in kinds),
            max_local_bsz=max(self.local_max(kind) for kind in self.profile.kinds),
        )
        if not self.adaptive:
            self.target_batch: int | None = self.spec.batch_size
        elif app in FIXED_ADAPTIVE:
            self.target_batch = FIXED_ADAPTIVE[app][0]
        else:
            self.target_batch = None
        # Looked up once: the cluster's settings do not change during a run, and these are read
        # on every simulated step.
        self._kinds = self.cluster.kinds
        self._slowdown = float(
            self.cluster.slowdown.get(app, self.cluster.slowdown.get("*", 1.0))
        )
        self.restart_delay = self.cluster.delay(app)

    @property
    def name(self) -> str:
        return self.spec.name

    def local_max(self, kind: str, placement: tuple[int, ...] | None = None) -> int:
        """Largest per-GPU micro-batch on `kind` (at `placement`, if given): memory limits."""
        profile = self.profile.kind(kind)
        own = profile.max_local_bsz if placement is None else profile.max_local_bsz_at(placement)
        cap = self.cluster.local_cap(self.spec.application, kind)
        return own if cap is None else min(own, cap)

    @property
    def batch_size(self) -> int:
        return self.replicas * self.atomic_bsz * (self.accum_steps + 1)

    @property
    def replicas(self) -> int:
        return self.allocation.num_replicas if self.allocation else 0

    # --- what the job knows about itself -------------------------------------------------
    def _record(
        self, kind: str, nodes: int, replicas: int, step: float, sync: float, atomic: int
    ) -> None:
        key = _ANY_KIND if self.merge_kinds else kind
        seen = self.observations.setdefault(key, {})
        config = (nodes, replicas, atomic)
        if config in seen:
            return
        seen[config] = (step, sync)
        self._stale.add(key)  # refitted lazily: rigid jobs never need a model
        self._model = None

    def _fitted(self) -> dict[str, ThroughputParams]:
        for key in self._stale:
            self._params[key] = fit_throughput(
                [StepObservation(n, r, b, s, y)
                 for (n, r, b), (s, y) in self.observations[key].items()],
                initial=self._params.get(key),
            )
        self._stale.clear()
        return self._params

    def model(self) -> GoodputModel | None:
        """The job's current GoodputModel (None until it has run at least once)."""
        if not self.observations or self.grad is None:
            return None
        if self._model is None:
            params = self._fitted()
            kinds = self._kinds
            if self.merge_kinds:
                throughput = {k: params[_ANY_KIND] for k in kinds}
                seen = max(r for (_, r, _) in self.observations[_ANY_KIND])
                explored = {k: seen for k in kinds}
            else:
                throughput = dict(params)
                explored = {k: max(r for (_, r, _) in obs) for k, obs in self.observations.items()}
            self._model = GoodputModel(
                throughput=throughput,
                grad=GradientStats(*self.grad),
                limits=self.limits,
                explored=explored,
                local_caps={k: self.local_max(k) for k in self.profile.kinds},
                progress=self.progress,
                target_progress=float(self.profile.epoch_progress[-1]),
            )
        elif self._model.progress != self.progress:
            self._model = replace(self._model, progress=self.progress)
        return self._model

    def profile_kinds(self, batches: int = 3) -> None:
        """Measure one GPU of every kind at a few micro-batch sizes, as a heterogeneity-aware
        scheduler does when a job arrives (Sia's bootstrapping), so that its first placement can
        already compare kinds. Profiling takes seconds of real time; it is not charged here."""
        for kind in self.cluster.kinds:
            if kind not in self.profile.kinds:
                continue
            low = self.profile.kind(kind).min_local_bsz
            high = max(low, self.local_max(kind, (1,)))
            for atomic in np.unique(np.rint(np.geomspace(low, high, batches))).astype(int).tolist():
                measured = self._true_step(kind, (1,), atomic)
                if measured is not None:
                    self._record(kind, 1, 1, measured[0], measured[1], atomic)
        if self.grad is None:
            self.grad = self.profile.grad_stats(float(self.limits.init_batch_size), 0)

    def view(self, now: float, restart_estimate: float) -> JobView:
        """What a policy sees of this job; `restart_estimate` is the seconds a restart costs.

        The job is its own oracle (its true, profiled speed) for the baselines defined with one.
        """
        app = self.spec.application
        if not self.adaptive:
            fixed: int | None = self.spec.num_replicas
        elif app in FIXED_ADAPTIVE:
            fixed = FIXED_ADAPTIVE[app][1]
        else:
            fixed = None
        return job_view(
            id=self.name,
            submit_time=self.spec.submit_time,
            application=app,
            owner=self.spec.owner,
            model=self.model() if self.adaptive else None,
            limits=self.limits,
            allocation=self.allocation,
            restarts=self.restarts or 0,
            attained_service=self.attained_service,
            replica_ceiling=self.max_replicas_cap,
            fixed_replicas=fixed,
            requested_replicas=self.spec.num_replicas,
            requested_batch_size=self.spec.batch_size,
            restart_s=restart_estimate,
            deadline=self.spec.deadline_at,
            oracle=self,
        )

    # --- oracle: true performance, for baselines defined with it -------------------------
    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float | None:
        replicas = sum(placement)
        atomic, accum = split_batch(
            batch_size, replicas, self.limits.init_batch_size, self.local_max(kind, placement)
        )
        atomic = min(int(atomic), self.limits.max_batch_size // (replicas * (int(accum) + 1)))
        measured = self._true_step(kind, placement, atomic)
        if measured is None:
            return None
        step, sync = measured
        return step + (step - sync) * int(accum)

    def remaining_steps(self, batch_size: int) -> float:
        total = self.profile.iterations(batch_size, self.profile.epochs)
        return max(total - self.profile.iterations(batch_size, self.epoch), 1.0)

    def _true_step(
        self, kind: str, placement: tuple[int, ...], atomic: int
    ) -> tuple[float, float] | None:
        measured = self.profile.kind(kind).step_time(tuple(placement), int(atomic))
        if measured is None:
            return None
        slow = self._slowdown
        return measured[0] * slow, measured[1] * slow

    # --- choosing the batch size ---------------------------------------------------------
    def choose_batch(self) -> None:
        alloc = self.allocation
        if alloc is None:
            return
        kind, nodes, replicas = alloc.kind, alloc.num_nodes, alloc.num_replicas
        cap = self.local_max(kind, alloc.placement())
        target = self.target_batch
        # Only a job choosing its own batch needs its model (fitting one is the costly part).
        model = self.model() if target is None else None
        if target is None and model is None:
            target = max(self.limits.init_batch_size, self.limits.min_local_bsz * replicas)
        if target is None:
            _, atomic, accum = model.best(kind, nodes, replicas)  # type: ignore[union-attr]
            self.atomic_bsz, self.accum_steps = int(atomic), int(accum)
            if self.atomic_bsz == 0:  # nothing valid: fall back to the smallest batch
                target = max(self.limits.init_batch_size, self.limits.min_local_bsz * replicas)
            elif self.atomic_bsz > cap:  # this placement fits less per GPU: accumulate more
                target = self.batch_size
        if target is not None:
            atomic, accum = split_batch(target, replicas, self.limits.init_batch_size, cap)
            self.atomic_bsz, self.accum_steps = int(atomic), int(accum)
        count = replicas * (self.accum_steps + 1)
        self.atomic_bsz = max(1, min(self.atomic_bsz, self.limits.max_batch_size // count))

    # --- time passing --------------------------------------------------------------------
    def reallocate(self, allocation: Allocation | None) -> None:
        if allocation is None or allocation.num_replicas == 0:
            self.allocation = None
            self.atomic_bsz = 0
            return
        self.allocation = allocation
        self.choose_batch()
        self.restart_left = self.restart_delay
        self.restarts = 0 if self.restarts is None else self.restarts + 1

    def _charge(self, seconds: float) -> None:
        alloc = self.allocation
        assert alloc is not None
        self.attained_service += seconds * alloc.num_replicas
        self.gpu_seconds[alloc.kind] = self.gpu_seconds.get(alloc.kind, 0.0) + (
            seconds * alloc.num_replicas
        )

    def advance(self, now: float, seconds: float) -> None:
        """Train for `seconds` starting at time `now` on the current allocation."""
        alloc = self.allocation
        if alloc is None or self.completion_time is not None:
            return
        delay = min(self.restart_left, seconds)
        self._charge(delay)
        self.restart_left -= delay
        now += delay
        seconds -= delay
        placement = alloc.placement()
        while seconds > 1e-9 and self.completion_time is None:
            measured = self._true_step(alloc.kind, placement, self.atomic_bsz)
            if measured is None:
                self.stalled_seconds += seconds
                self._charge(seconds)
                return
            step, sync = measured
            batch = self.batch_size
            sqr, var = self.profile.grad_stats(float(batch), self.epoch)
            self.grad = (sqr, var)
            self._record(
                alloc.kind, alloc.num_nodes, alloc.num_replicas, step, sync, self.atomic_bsz
            )
            step_total = step + (step - sync) * self.accum_steps
            # scale-invariant iterations per second
            rate = self.profile.progress_gain(batch, self.epoch) / step_total
            target = float(self.profile.epoch_progress[self.epoch])
            if self.progress + rate * seconds < target:
                self.progress += rate * seconds
                self._charge(seconds)
                seconds = 0.0
            else:
                needed = (target - self.progress) / rate
                self._charge(needed)
                now += needed
                seconds -= needed
                self.progress = target
                self.epoch += 1
                self._model = None
                if self.epoch >= self.profile.epochs:
                    self.completion_time = now
                    return
            if self.target_batch is None:  # a fixed target splits the same way until moved
                self.choose_batch()  # with what was just learned, for the rest of the interval

    @property
    def done(self) -> bool:
        return self.completion_time is not None


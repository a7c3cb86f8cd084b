"""Carbon-aware start times around any policy: jobs with a deadline wait for greener hours.

A job whose owner gave a deadline (`JobView.deadline`), or every job when the wrapper is given a
default slack, need not start the moment it arrives. `CarbonAwarePolicy` predicts how long the job
will run, picks with `best_start` the start whose run window has the lowest mean grid intensity
and still leaves room for the deadline, and hides the job from the wrapped policy until then.
Everything else (running jobs, jobs without a deadline, jobs whose time has come) goes to the
wrapped policy unchanged, so the wrapped policy decides how the GPUs are shared.

Why a wrapper and not a policy of its own: when to start is independent of how to share the
cluster, and every policy (rigid or adaptive) gains the same way. The simulator and a live
scheduler use the same object; `now` is injected and nothing here reads a clock.

Capacity: green hours are shared. Left alone, every waiting job would pick the same windows and
then queue for GPUs into dirtier hours. So the wrapper keeps a calendar of the GPUs it expects in
use per grid slot (released jobs, running or queued, from now until their predicted end; held
jobs over their planned windows) and a job plans the greenest start whose whole run fits in what
is left. Where nothing fits before its deadline, it may take slots that held jobs booked (not
those of released jobs): a short job finds another green slot more easily than a long one finds
a free stretch. A held job whose slots were taken re-plans when its start comes, instead of
being released only to queue. The calendar is an estimate: a wrapped policy that keeps free GPUs
idle (strict FIFO behind a large job) can still make a released job wait.

Safety: a job waits only for a window at least `min_saving` greener than starting now; the plan
pads the predicted run time (`margin` × the estimate + `margin_s`) before it checks the
deadline, re-plans whenever the estimate moves by more than `replan` of itself, and releases a
job at once when waiting any longer would leave less than the padded run time. A job whose run
time cannot be predicted starts at once: waiting blind could cost its deadline. Once released, a
job is never held again (holding a running job would pause it, not shift it).

Slack: with `slack_s`, a job without a deadline of its own gets one when first seen: its submit
time + its predicted run time + the slack, i.e. "may finish up to `slack_s` later than if it
started at once". The deadline is then fixed for the job's life, so re-planning cannot move it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from thrifty.accounting.carbon import CarbonIntensity, best_start
from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, ClusterView, JobView, Policy, PolicyWrapper
from thrifty.policy.placement import packed_shape

# Why a job was released when it was (StartPlan.reason).
NO_DEADLINE = "no deadline"
NO_ESTIMATE = "no run-time estimate"
RUNNING = "already running"
GREEN = "green window"
DEADLINE_NEAR = "deadline near"


@dataclass
class StartPlan:
    """What the wrapper decided for one job; kept after the job leaves, for reports."""

    job: str
    first_seen_s: float
    deadline_s: float | None = None
    estimate_s: float | None = None  # predicted run time behind the current plan
    start_s: float | None = None  # planned start (None: no plan)
    released_s: float | None = None
    reason: str = ""

    @property
    def held_s(self) -> float:
        """Seconds the job was kept from the wrapped policy (0 if released when first seen)."""
        if self.released_s is None:
            return 0.0
        return self.released_s - self.first_seen_s


def estimate_run_seconds(job: JobView, cluster: ClusterView) -> float | None:
    """How long the job will run once started, or None when nothing predicts it.

    From its GoodputModel where it reports one with a declared length: remaining progress ÷
    progress per second at the best batch size on the GPUs it would likely get (what it holds,
    else what its owner asked for), on the slowest GPU kind it could land on. Otherwise from the
    job's oracle at its owner's request (in the simulator a job's true speed and length; on a
    live cluster `ModelOracle`, which knows a length only where the model declares one).
    Both add one restart. The slowest kind is taken because an early estimate is safer than a
    late one: an overestimate only starts the job a little earlier than needed.
    """
    replicas = max(job.allocation.num_replicas if job.allocation else
                   (job.requested_replicas or 1), 1)
    kinds = [k for k in cluster.kinds if cluster.gpus_of(k) >= replicas] or list(cluster.kinds)
    seconds = _from_model(job, cluster, kinds, replicas)
    if seconds is None:
        seconds = _from_oracle(job, cluster, kinds, replicas)
    return None if seconds is None else seconds + job.restart_s


def _from_model(
    job: JobView, cluster: ClusterView, kinds: Sequence[str], replicas: int
) -> float | None:
    model = job.model
    if model is None or model.target_progress is None:
        return None
    left = max(model.target_progress - model.progress, 0.0)
    times = []
    for kind in kinds:
        if kind not in model.throughput:
            continue
        shape = packed_shape(cluster, kind, min(replicas, cluster.gpus_of(kind)))
        goodput = float(model.best(kind, len(shape), sum(shape))[0])
        if goodput > 0:
            # goodput is in samples/s at the initial batch's efficiency: progress/s × init batch
            times.append(left * model.limits.init_batch_size / goodput)
    return max(times) if times else None


def _from_oracle(
    job: JobView, cluster: ClusterView, kinds: Sequence[str], replicas: int
) -> float | None:
    oracle, batch = job.oracle, job.requested_batch_size
    if oracle is None or not batch:
        return None
    times = []
    for kind in kinds:
        shape = packed_shape(cluster, kind, min(replicas, cluster.gpus_of(kind)))
        step = oracle.step_seconds(kind, shape, batch)
        steps = oracle.remaining_steps(batch)
        if step is not None and step > 0 and steps is not None:
            times.append(step * steps)
    return max(times) if times else None


class CarbonAwarePolicy(PolicyWrapper):
    """Any policy, with jobs that have a deadline started in the greenest hours that meet it.

    It predicts run times from each job's oracle where its model cannot (`needs_oracle`),
    whatever the wrapped policy needs."""

    needs_oracle = True

    def __init__(
        self,
        inner: Policy,
        intensity: CarbonIntensity,
        *,
        slack_s: float | None = None,
        margin: float = 0.25,
        margin_s: float = 1800.0,
        step_s: float = 900.0,
        replan: float = 0.1,
        min_saving: float = 0.05,
    ):
        if slack_s is not None and not (math.isfinite(slack_s) and slack_s > 0):
            raise ThriftyError(f"carbon slack must be a positive number of seconds, got {slack_s}")
        if margin < 0 or margin_s < 0 or replan < 0 or not 0 <= min_saving < 1:
            raise ThriftyError("carbon-aware safety margins must be non-negative")
        if step_s <= 0:
            raise ThriftyError(f"the start-time grid step must be positive, got {step_s}")
        super().__init__(inner)
        self.intensity = intensity
        self.slack_s = slack_s
        self.margin = margin
        self.margin_s = margin_s
        self.step_s = step_s
        self.replan = replan
        self.min_saving = min_saving
        self.plans: dict[str, StartPlan] = {}
        self._estimates: dict[str, tuple[float, float | None]] = {}  # job: (when, seconds)
        self._round: tuple[Sequence[JobView], ClusterView, float] = ((), ClusterView(()), 0.0)
        self._calendar: _Calendar | None = None

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        self._round = (jobs, cluster, now)
        self._calendar = None  # built when a job first needs a plan this round
        ready = [job for job in jobs if not self._holds(job, cluster, now)]
        return self.inner.allocate(ready, cluster, now)

    def held(self) -> list[str]:
        """Jobs held back right now."""
        return [p.job for p in self.plans.values() if p.released_s is None]

    # --- one job -----------------------------------------------------------------------------
    def _holds(self, job: JobView, cluster: ClusterView, now: float) -> bool:
        plan = self.plans.get(job.id)
        if plan is None:
            plan = self.plans[job.id] = StartPlan(job.id, now, job.deadline)
        if plan.released_s is not None:
            return False
        if job.allocation is not None:
            return self._release(plan, now, RUNNING)
        if plan.deadline_s is None and self.slack_s is None:
            return self._release(plan, now, NO_DEADLINE)
        estimate = self._estimate(job, cluster, now)
        if estimate is None:
            return self._release(plan, now, NO_ESTIMATE)
        if plan.deadline_s is None:
            assert self.slack_s is not None
            plan.deadline_s = job.submit_time + estimate + self.slack_s
        padding = estimate * self.margin + self.margin_s
        latest_start = plan.deadline_s - estimate - padding
        if now >= latest_start:
            return self._release(plan, now, DEADLINE_NEAR)
        if plan.estimate_s is None or abs(estimate - plan.estimate_s) > self.replan * \
                plan.estimate_s:
            self._plan(job, plan, estimate, padding, now)
        assert plan.start_s is not None
        if now < plan.start_s:
            return True
        calendar = self._booked()
        calendar.cancel(job.id)
        if not calendar.fits(now, now + estimate, _gpus(job), held_too=True):
            # Its GPUs went to a job nobody planned for: released now, it would only queue (and
            # hold up the jobs behind it); wait for the next window that has room instead.
            self._plan(job, plan, estimate, padding, now)
            if now < plan.start_s:
                return True
        calendar.book(job.id, now, now + estimate, _gpus(job), held=False)
        return self._release(plan, now, GREEN)

    def _plan(self, job: JobView, plan: StartPlan, estimate: float, padding: float,
              now: float) -> None:
        """Book the greenest start that fits the calendar and leaves `padding` before the
        deadline (now, if none does)."""
        assert plan.deadline_s is not None
        calendar = self._booked()
        calendar.cancel(job.id)  # its old slots are free while it re-plans
        gpus = _gpus(job)
        start = now
        # Room left by every booking first; failing that, room left by the jobs already
        # released, taking slots that waiting jobs booked (short ones find other slots more
        # easily than a long one finds a free stretch); failing that, now.
        for held_too in (True, False):
            choice = best_start(self.intensity, now, estimate, plan.deadline_s - padding,
                                self.step_s,
                                lambda t, h=held_too: calendar.fits(t, t + estimate, gpus, h))
            if calendar.fits(choice.start_s, choice.start_s + estimate, gpus, held_too):
                # Waiting risks the deadline (the GPUs may be gone when the window comes): not
                # worth it for a window barely greener than now.
                if choice.saving_fraction >= self.min_saving:
                    start = choice.start_s
                break
        plan.estimate_s, plan.start_s = estimate, start
        calendar.book(job.id, start, start + estimate, gpus, held=True)

    def _estimate(self, job: JobView, cluster: ClusterView, now: float) -> float | None:
        """A waiting job's predicted run time, refreshed once per grid step: plans are made on
        that grid, and predicting every round would cost more than the plans it could change."""
        cached = self._estimates.get(job.id)
        if cached is None or now - cached[0] >= self.step_s:
            cached = self._estimates[job.id] = (now, estimate_run_seconds(job, cluster))
        return cached[1]

    def _release(self, plan: StartPlan, now: float, reason: str) -> bool:
        plan.released_s, plan.reason = now, reason
        self._estimates.pop(plan.job, None)
        return False

    def _booked(self) -> _Calendar:
        """This round's calendar, built on first use from every job's expected use: released
        jobs (running or queued) from now for their predicted remaining time, held ones over
        their plans."""
        if self._calendar is not None:
            return self._calendar
        jobs, cluster, now = self._round
        calendar = _Calendar(now, self.step_s, cluster.num_gpus)
        for job in jobs:
            plan = self.plans.get(job.id)
            if plan is None:
                continue
            if plan.released_s is None:
                if plan.start_s is not None and plan.estimate_s is not None:
                    calendar.book(job.id, plan.start_s, plan.start_s + plan.estimate_s,
                                  _gpus(job), held=True)
                continue
            remaining = estimate_run_seconds(job, cluster)
            if remaining is not None:
                calendar.book(job.id, now, now + remaining, _gpus(job), held=False)
        self._calendar = calendar
        return calendar


def _gpus(job: JobView) -> int:
    """GPUs the job holds, else what its owner asked for: what it will most likely occupy."""
    if job.allocation is not None:
        return job.allocation.num_replicas
    return max(job.requested_replicas or 1, 1)


class _Calendar:
    """GPUs expected in use per `step_s` slot from `now` on, against the cluster's capacity;
    one booking per job, so that a job re-planning gives its old slots back first. Bookings of
    held jobs are kept apart from those of released ones, which are certain to want their GPUs."""

    def __init__(self, now: float, step_s: float, capacity: int):
        self.now = now
        self.step_s = step_s
        self.capacity = capacity
        self.used: dict[int, int] = {}  # every booking
        self.released: dict[int, int] = {}  # bookings of released jobs only
        self.bookings: dict[str, tuple[range, int, bool]] = {}

    def _slots(self, start_s: float, end_s: float) -> range:
        first = int(max(start_s, self.now) // self.step_s)
        return range(first, max(first + 1, math.ceil(end_s / self.step_s)))

    def book(self, job: str, start_s: float, end_s: float, gpus: int, held: bool) -> None:
        self.cancel(job)
        slots = self._slots(start_s, end_s)
        self.bookings[job] = (slots, gpus, held)
        for slot in slots:
            self.used[slot] = self.used.get(slot, 0) + gpus
            if not held:
                self.released[slot] = self.released.get(slot, 0) + gpus

    def cancel(self, job: str) -> None:
        slots, gpus, held = self.bookings.pop(job, (range(0), 0, True))
        for slot in slots:
            self.used[slot] -= gpus
            if not held:
                self.released[slot] -= gpus

    def fits(self, start_s: float, end_s: float, gpus: int, held_too: bool) -> bool:
        """Whether `gpus` more fit over the span, counting held jobs' bookings or not."""
        used = self.used if held_too else self.released
        return all(used.get(slot, 0) + gpus <= self.capacity
                   for slot in self._slots(start_s, end_s))

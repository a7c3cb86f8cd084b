"""The discrete-time simulation loop: jobs train for an interval, then the policy re-allocates.

Every interval (60 s by default) each running job advances at its true, profiled speed; then the
policy sees every active job and the cluster and returns allocations, and every job whose
allocation changed pays its restart delay. Time is simulated; only the policy's own run time is
measured on the wall clock, since that is what a live scheduler would spend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView, Policy
from thrifty.policy.views import check_answer
from thrifty.sim.autoscale import Autoscaler, NodeRecord
from thrifty.sim.cluster import ClusterSpec
from thrifty.sim.job import SimJob
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import Workload


@dataclass(frozen=True)
class SimSettings:
    interval_s: float = 60.0  # between scheduling rounds
    restart_delay_s: float | None = None  # per re-allocation; None: the cluster's own
    max_hours: float = 24.0 * 30  # give up (with an error) past this much simulated time

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ThriftyError(f"interval must be positive, got {self.interval_s}")
        if self.restart_delay_s is not None and self.restart_delay_s < 0:
            raise ThriftyError(f"restart delay must be non-negative, got {self.restart_delay_s}")


@dataclass(frozen=True)
class JobRecord:
    name: str
    application: str
    submit_time: float
    completion_time: float
    restarts: int
    gpu_seconds: dict[str, float]
    mean_contention: float  # average number of active jobs while this one was in the system
    stalled_seconds: float


@dataclass
class SimResult:
    policy: str
    workload: str
    cluster: str
    jobs: list[JobRecord]
    round_seconds: list[float]  # wall-clock seconds the policy took, per round
    gpus_in_use: list[tuple[float, int]]  # (simulated time, GPUs allocated) per round
    wall_seconds: float = 0.0
    # wall-clock seconds the simulator itself spent per round (training, views, checks,
    # applying allocations): everything but the policy, the overhead a large run must keep low
    sim_round_seconds: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    # every node held during the run and when (a fixed cluster holds all of them from time 0 to
    # the end of the last round): what a cloud would bill
    nodes: list[NodeRecord] = field(default_factory=list)


def cluster_view(cluster: ClusterSpec) -> ClusterView:
    return ClusterView(tuple(
        NodeView(n.name, n.gpu_kind, n.num_gpus, n.price_per_hour) for n in cluster.nodes
    ))


def _check(allocations: dict[str, Allocation], views: list[JobView], cluster: ClusterView,
           who: str) -> None:
    """Raise on the first fault in a policy's answer: a run with a faulty policy means nothing.

    The answer is applied as given otherwise (replica limits and minimums are the policy's to
    respect here; the live scheduler trims what a policy could not know)."""
    errors = check_answer(allocations, views, cluster).errors
    if errors:
        raise ThriftyError(f"policy {who} {errors[0]}")


def simulate(
    workload: Workload,
    cluster: ClusterSpec,
    policy: Policy,
    profiles: ProfileSet,
    settings: SimSettings | None = None,
    on_round: Callable[[int, int], None] | None = None,
    autoscaler: Autoscaler | None = None,
) -> SimResult:
    """Run one workload under one policy to the last job's completion.

    With an `autoscaler`, `cluster` is the pool of nodes that may be rented: the policy sees only
    those the autoscaler holds and has finished booting, and the autoscaler acts after every
    round (and once at time 0, to rent its floor of nodes).
    """
    settings = settings or SimSettings()
    if settings.restart_delay_s is not None:
        cluster = ClusterSpec(
            name=cluster.name, nodes=cluster.nodes, profiles=cluster.profiles,
            restart_delay={"*": settings.restart_delay_s}, slowdown=cluster.slowdown,
            local_bsz_caps=cluster.local_bsz_caps, autoscale=cluster.autoscale,
        )
    started = time.perf_counter()
    view = cluster_view(cluster)
    if autoscaler is not None:
        autoscaler.step([], {}, 0.0)
    kinds = cluster.kinds
    num_gpus = cluster.num_gpus
    jobs = [
        SimJob(
            spec=spec,
            profile=profiles.get(spec.application, kinds),
            cluster=cluster,
            adaptive=policy.adaptive,
            merge_kinds=not policy.heterogeneity_aware,
            max_replicas_cap=num_gpus,
        )
        for spec in workload.jobs
    ]
    # Heterogeneity-aware policies such as Sia measure each new job on one GPU of every kind.
    profiles_on_arrival = policy.profiles_on_arrival
    contention_sum = {j.name: 0.0 for j in jobs}
    contention_rounds = {j.name: 0 for j in jobs}
    rounds: list[float] = []
    overhead: list[float] = []
    in_use: list[tuple[float, int]] = []
    now = 0.0
    limit = settings.max_hours * 3600
    done = 0
    # Only submitted, unfinished jobs are touched each round (thousands of jobs at scale, most
    # of them waiting or done): `live` holds their indices in workload order, the order in
    # which the policy has always seen them; `arrivals` is the submission order.
    arrivals = sorted(range(len(jobs)), key=lambda i: jobs[i].spec.submit_time)
    in_order = arrivals == list(range(len(jobs)))
    arrived = 0
    live: list[int] = []
    while done < len(jobs):
        tick = time.perf_counter()
        for i in live:
            jobs[i].advance(now, settings.interval_s)
        now += settings.interval_s
        finished = [i for i in live if jobs[i].done]
        if finished:
            live = [i for i in live if not jobs[i].done]
            done += len(finished)
        if now > limit:
            raise ThriftyError(
                f"{workload.name} under {policy.name} did not finish within {settings.max_hours} "
                f"simulated hours ({len(jobs) - done} jobs left)"
            )
        for i in finished:
            if jobs[i].allocation is not None:
                jobs[i].reallocate(None)
        while arrived < len(arrivals) and jobs[arrivals[arrived]].spec.submit_time <= now:
            live.append(arrivals[arrived])
            arrived += 1
        if not in_order:
            live.sort()
        active = [jobs[i] for i in live]
        if profiles_on_arrival:
            for job in active:
                if not job.observations:
                    job.profile_kinds()
        if autoscaler is not None:
            view = autoscaler.view(now)
        if not active:
            if autoscaler is not None:
                autoscaler.step([], {}, now)
            continue
        views = [j.view(now, j.restart_delay) for j in active]
        spent = 0.0
        if view.nodes:
            t0 = time.perf_counter()
            allocations = policy.allocate(views, view, now)
            spent = time.perf_counter() - t0
            rounds.append(spent)
        else:  # a rented cluster with no node up yet: nothing to allocate
            allocations = {}
        _check(allocations, views, view, policy.name)
        for job in active:
            new = allocations.get(job.name)
            if new is None or new.num_replicas == 0:
                if job.allocation is not None:
                    job.reallocate(None)
            elif not new.same_as(job.allocation):
                job.reallocate(new)
            contention_sum[job.name] += len(active)
            contention_rounds[job.name] += 1
        if autoscaler is not None:
            autoscaler.step(views, allocations, now)
        in_use.append((now, sum(a.num_replicas for a in allocations.values())))
        overhead.append(time.perf_counter() - tick - spent)
        if on_round is not None:
            on_round(done, len(jobs))
    if on_round is not None:
        on_round(done, len(jobs))  # the last round may have had no active job to report
    records = [
        JobRecord(
            name=j.name,
            application=j.spec.application,
            submit_time=j.spec.submit_time,
            completion_time=float(j.completion_time or 0.0),
            restarts=j.restarts or 0,
            gpu_seconds=dict(j.gpu_seconds),
            mean_contention=contention_sum[j.name] / max(contention_rounds[j.name], 1),
            stalled_seconds=j.stalled_seconds,
        )
        for j in jobs
    ]
    return SimResult(
        policy=policy.name,
        workload=workload.name,
        cluster=cluster.name,
        jobs=records,
        round_seconds=rounds,
        gpus_in_use=in_use,
        wall_seconds=time.perf_counter() - started,
        sim_round_seconds=overhead,
        nodes=_held(cluster, now) if autoscaler is None else autoscaler.finish(now),
    )


def _held(cluster: ClusterSpec, end_s: float) -> list[NodeRecord]:
    """A fixed cluster's nodes, held from time 0 to the end of the run."""
    return [NodeRecord(n.name, n.gpu_kind, n.num_gpus, n.price_per_hour, 0.0, 0.0, end_s)
            for n in cluster.nodes]

"""Summary metrics of a simulation run, the figures the papers compare policies by.

Finish-time fairness (Themis, NSDI'20) is ρ = JCT / T_fair, where T_fair is the time the job would
take alone on an equal share of the cluster: the GPUs divided by the average number of jobs it
competed with. ρ > 1 means the job did worse than under a static equal split; the worst ρ over
all jobs is reported. T_fair uses the best batch size per epoch on the best GPU kind, whatever the
policy, so that every policy is held to the same yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thrifty.goodput import GradientStats, gain, split_batch
from thrifty.sim.cluster import ClusterSpec
from thrifty.sim.engine import JobRecord, SimResult
from thrifty.sim.profiles import AppProfile


@dataclass(frozen=True)
class Summary:
    policy: str
    workload: str
    cluster: str
    avg_jct_s: float
    p50_jct_s: float
    p99_jct_s: float
    makespan_s: float
    gpu_hours: float
    gpu_hours_by_kind: dict[str, float]
    restarts_per_job: float
    worst_ftf: float
    policy_round_median_s: float
    policy_round_p95_s: float
    wall_s: float
    jobs: int
    # The simulator's own wall seconds per round (all but the policy), median and p95.
    sim_round_median_s: float = 0.0
    sim_round_p95_s: float = 0.0
    peak_jobs_in_flight: int = 0  # most jobs submitted and unfinished at once
    # Per-job and per-round series for figures: left out of `row()` to keep the JSON small.
    jcts_s: tuple[float, ...] = field(default=(), repr=False)
    gpus_in_use: tuple[tuple[float, int], ...] = field(default=(), repr=False)
    # Cost, energy and carbon of the run, from its ledger (sim/costing.py): every allocated
    # GPU-hour is billed, idle and restart time included; NaN where the run was not priced.
    usd: float = float("nan")
    kwh: float = float("nan")
    kgco2e: float = float("nan")
    allocated_gpu_hours: float = float("nan")
    # What renting the nodes would cost: node-hours held (request to release; a fixed cluster
    # holds all of them for the whole run) and their USD. NaN where the run was not priced.
    node_hours: float = float("nan")
    held_usd: float = float("nan")
    ledger: Any = field(default=None, repr=False, compare=False)
    # Carbon-aware start times (thrifty.policy.carbon_aware): kg CO2e had every job started
    # when it arrived (NaN where no job could wait), jobs with a deadline, deadlines missed,
    # and the per-job outcomes (ShiftOutcome).
    kgco2e_at_once: float = float("nan")
    deadline_jobs: int = 0
    deadlines_missed: int = 0
    carbon_shift: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def row(self) -> dict[str, object]:
        """The JSON record of one (policy, workload) run."""
        return {
            "policy": self.policy,
            "workload": self.workload,
            "cluster": self.cluster,
            "avg_jct_s": self.avg_jct_s,
            "p50_jct_s": self.p50_jct_s,
            "p99_jct_s": self.p99_jct_s,
            "makespan_s": self.makespan_s,
            "gpu_hours": self.gpu_hours,
            "gpu_hours_by_kind": self.gpu_hours_by_kind,
            "restarts_per_job": self.restarts_per_job,
            "worst_ftf": self.worst_ftf,
            "policy_round_median_s": self.policy_round_median_s,
            "policy_round_p95_s": self.policy_round_p95_s,
            "wall_s": self.wall_s,
            "jobs": self.jobs,
            "sim_round_median_s": self.sim_round_median_s,
            "sim_round_p95_s": self.sim_round_p95_s,
            "peak_jobs_in_flight": self.peak_jobs_in_flight,
            "allocated_gpu_hours": self.allocated_gpu_hours,
            "usd": self.usd,
            "kwh": self.kwh,
            "kgco2e": self.kgco2e,
            "node_hours": self.node_hours,
            "held_usd": self.held_usd,
            "kgco2e_at_once": self.kgco2e_at_once,
            "deadline_jobs": self.deadline_jobs,
            "deadlines_missed": self.deadlines_missed,
        }


def _packed(cluster: ClusterSpec, kind: str, gpus: int) -> tuple[int, ...]:
    """`gpus` GPUs of one kind on as few nodes as possible."""
    placement: list[int] = []
    for node in sorted((n for n in cluster.nodes if n.gpu_kind == kind),
                       key=lambda n: -n.num_gpus):
        if gpus <= 0:
            break
        take = min(node.num_gpus, gpus)
        placement.append(take)
        gpus -= take
    return tuple(placement)


_ISOLATED: dict[tuple[str, str, str, int], float] = {}


def _isolated_seconds(profile: AppProfile, cluster: ClusterSpec, gpus: int) -> float:
    key = (profile.name, cluster.name, cluster.profiles, gpus)
    if key not in _ISOLATED:
        _ISOLATED[key] = _best_isolated(profile, cluster, gpus)
    return _ISOLATED[key]


def _best_isolated(profile: AppProfile, cluster: ClusterSpec, gpus: int) -> float:
    """Seconds to train alone on `gpus` GPUs of the best kind, best batch size per epoch."""
    best = np.inf
    slow = cluster.slowdown.get(profile.name, cluster.slowdown.get("*", 1.0))
    batches = np.unique(np.geomspace(profile.init_batch_size, profile.max_batch_size, 24).round())
    for kind in cluster.kinds:
        placement = _packed(cluster, kind, gpus)
        replicas = sum(placement)
        kp = profile.kind(kind)
        cap = kp.max_local_bsz
        local_cap = cluster.local_cap(profile.name, kind)
        cap = cap if local_cap is None else min(cap, local_cap)
        total = cluster.delay(profile.name)
        previous = 0.0
        for epoch in range(profile.epochs):
            rate = 0.0
            for batch in batches:
                atomic, accum = split_batch(batch, replicas, profile.init_batch_size, cap)
                if atomic < kp.min_local_bsz:
                    continue
                measured = kp.step_time(placement, int(atomic))
                if measured is None:
                    continue
                step, sync = measured[0] * slow, measured[1] * slow
                seconds = step + (step - sync) * int(accum)
                stats = GradientStats(*profile.grad_stats(float(batch), epoch))
                rate = max(rate, float(gain(stats, profile.init_batch_size, batch)) / seconds)
            if rate <= 0:
                total = np.inf
                break
            target = float(profile.epoch_progress[epoch])
            total += (target - previous) / rate
            previous = target
        best = min(best, total)
    return float(best)


def finish_time_fairness(
    job: JobRecord, profile: AppProfile, cluster: ClusterSpec
) -> float:
    share = max(1, int(cluster.num_gpus / max(job.mean_contention, 1.0)))
    fair = _isolated_seconds(profile, cluster, share)
    return (job.completion_time - job.submit_time) / fair if np.isfinite(fair) else float("nan")


def peak_in_flight(jobs: list[JobRecord]) -> int:
    """Most jobs between submission and completion at any instant (a finish frees first)."""
    events = sorted([(j.submit_time, 1) for j in jobs] + [(j.completion_time, -1) for j in jobs])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def summarize(
    result: SimResult, cluster: ClusterSpec, profiles: dict[str, AppProfile]
) -> Summary:
    jcts = np.array([j.completion_time - j.submit_time for j in result.jobs])
    kinds: dict[str, float] = {}
    for job in result.jobs:
        for kind, seconds in job.gpu_seconds.items():
            kinds[kind] = kinds.get(kind, 0.0) + seconds / 3600
    ftf = [finish_time_fairness(j, profiles[j.application], cluster) for j in result.jobs]
    rounds = np.array(result.round_seconds) if result.round_seconds else np.zeros(1)
    overhead = np.array(result.sim_round_seconds) if result.sim_round_seconds else np.zeros(1)
    first = min(j.submit_time for j in result.jobs)
    return Summary(
        policy=result.policy,
        workload=result.workload,
        cluster=result.cluster,
        avg_jct_s=float(jcts.mean()),
        p50_jct_s=float(np.percentile(jcts, 50)),
        p99_jct_s=float(np.percentile(jcts, 99)),
        makespan_s=float(max(j.completion_time for j in result.jobs) - first),
        gpu_hours=float(sum(kinds.values())),
        gpu_hours_by_kind={k: round(v, 3) for k, v in sorted(kinds.items())},
        restarts_per_job=float(np.mean([j.restarts for j in result.jobs])),
        worst_ftf=float(np.nanmax(ftf)) if np.any(np.isfinite(ftf)) else float("nan"),
        policy_round_median_s=float(np.median(rounds)),
        policy_round_p95_s=float(np.percentile(rounds, 95)),
        wall_s=result.wall_seconds,
        jobs=len(result.jobs),
        sim_round_median_s=float(np.median(overhead)),
        sim_round_p95_s=float(np.percentile(overhead, 95)),
        peak_jobs_in_flight=peak_in_flight(result.jobs),
        jcts_s=tuple(float(x) for x in jcts),
        gpus_in_use=tuple(result.gpus_in_use),
    )

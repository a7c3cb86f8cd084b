"""Gavel: heterogeneity-aware scheduling of rigid jobs by time fractions per GPU kind.

Source: D. Narayanan et al., "Heterogeneity-Aware Cluster Scheduling Policies for Deep Learning
Workloads", OSDI 2020, as Sia's evaluation (SOSP 2023) ran it in its public simulator.

How it works, and where each detail comes from:

- Jobs are rigid (the paper, and Sia's runs): each runs with the GPU count and total batch size
  its owner asked for (`requested_replicas`, `requested_batch_size`) on whichever single GPU kind
  it is given. A job's throughput on a kind is its steps per second at that batch, on the request
  packed onto as few nodes of that kind as possible; here it comes from the oracle (the measured
  profile, calibration slowdown included, where Sia's simulator read the same profiles; on a live
  cluster the job's fitted model, through `ModelOracle`). The policy reads nothing else about a
  job's speed (`needs_oracle`).
- Policy as a linear program over X[job, kind], the fraction of time a job should spend on each
  kind (the paper, §3-4): X ≥ 0, Σ_kind X ≤ 1 per job, Σ_job requested GPUs · X ≤ GPUs of the kind.
  `GavelPolicy` maximises the sum of throughputs Σ throughput·X, in raw steps per second as both
  Gavel's and Sia's `max_sum_throughput_perf` code do (Sia's default Gavel objective;
  `normalized=True` divides each job's row by its sum over kinds instead). `GavelFtfPolicy`
  minimises the worst finish-time ratio (Themis's ρ, paper §4.2):
  (age + remaining steps / throughput(X)) / (isolated time), where the isolated time is
  Sia's: the wait to the next round, plus one restart, plus all the job's steps at the throughput
  of Gavel's "isolated" equal split of every kind among the active jobs.
- Round-based mechanism (paper §5; Sia's `gavel.py`): every `round_seconds` (Sia ran Gavel with
  360 s, its simulator stepping 360 s at a time) each job's priority on each kind is
  X / (share of that kind's time the job has received so far), where a job enters with half a
  round credited on every kind and the shares are never reset (Sia's version). All
  (job, kind) pairs are taken in decreasing priority (ties: larger X, then kinds in name order,
  then jobs in arrival order), and a job is started on the first kind that still has its GPU
  count free; pairs with X = 0 remain as work-conserving backfill. A job left out of a round is
  suspended and pays its restart delay when it is next started.
- Placement (Sia's `gavel.py`): per kind, larger jobs first; a job keeps its previous GPUs when
  they are all still free, otherwise it takes free GPUs node by node in node order. Only a change
  of nodes restarts a job.
- The allocation holds between rounds: a job that finishes leaves its GPUs idle until the next
  round, and a job that arrives waits for the next round, as in Sia's simulator. Rounds fall on
  multiples of `round_seconds` from time 0, whatever the simulator's own interval.

Two choices of our own, where the LP has many optimal solutions: (1) jobs with identical
throughputs and GPU counts (Philly traces repeat a few job shapes many times) share one LP
variable, so they all get the same X — the symmetric solution the interior-point solver
(ECOS) in Gavel's and Sia's code returns, where a simplex vertex would favour some of them
arbitrarily; (2) the FTF variant, having found the smallest worst ratio by bisection, maximises
the normalised total throughput among the allocations that achieve it, instead of keeping an
arbitrary one. X is rounded to 5 decimals, as in Sia's code. A request larger than every kind
is capped at the largest kind so that it can run at all (never the case in Sia's workloads).
The policy is deterministic; `seed` is accepted for the common interface only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.gavel_programs import (
    isolated_throughputs,
    max_sum_throughput,
    min_max_finish_time_fairness,
)
from thrifty.policy.placement import Worker, pack, place_slots, slots_allocation

# --- the round-based mechanism ---------------------------------------------------------------


@dataclass(frozen=True)
class _Rates:
    """One round's inputs to the LP: steps per second of each job on each kind, the GPUs each
    job needs, and the GPUs of each kind."""

    throughputs: NDArray[np.float64]
    scale_factors: NDArray[np.float64]
    capacity: NDArray[np.float64]


@dataclass
class _JobState:
    time_on: dict[str, float]  # seconds received per kind, plus half a round of credit
    total_steps: float | None = None


class _GavelBase(BasePolicy):
    """Gavel's round-based mechanism around a time-fraction LP chosen by the subclass."""

    name = "gavel"
    heterogeneity_aware = True
    needs_oracle = True

    def __init__(self, seed: int = 0, round_seconds: float = 360.0):
        if round_seconds <= 0:
            raise ThriftyError(f"round_seconds must be positive, got {round_seconds}")
        self.seed = seed
        self.round_seconds = float(round_seconds)
        self._next_round = self.round_seconds
        self._state: dict[str, _JobState] = {}
        self._kind_time: dict[str, float] = {}
        self._workers: dict[str, tuple[str, tuple[Worker, ...]]] = {}
        self._allocations: dict[str, Allocation] = {}
        self._steps_cache: dict[tuple[str, str], tuple[object, float]] = {}
        self.last_fractions: dict[str, dict[str, float]] = {}

    # -- the policy-specific part --
    def _fractions(self, jobs: Sequence[JobView], rates: _Rates, now: float) -> NDArray[np.float64]:
        raise NotImplementedError

    # -- Policy protocol --
    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        if now + 1e-6 < self._next_round:
            active = {j.id for j in jobs}
            return {k: v for k, v in self._allocations.items() if k in active}
        self._next_round = (math.floor(now / self.round_seconds + 1e-9) + 1) * self.round_seconds
        self._run_round(jobs, cluster, now)
        return dict(self._allocations)

    # -- one round --
    def _scale_factor(self, job: JobView, cluster: ClusterView) -> int:
        largest = max(cluster.gpus_of(k) for k in cluster.kinds)
        return max(1, min(job.requested_replicas or 1, largest))

    def _throughput(self, job: JobView, kind: str, sf: int, cluster: ClusterView) -> float:
        """Steps per second of the job's requested batch on `sf` GPUs of `kind`, packed onto
        the fewest nodes, from the job's oracle (measured profiles in the simulator, the job's
        own throughput model on a live cluster); the same on every kind for a job without one
        (Gavel then cannot tell kinds apart, but still shares time). Answers are kept while the
        job's oracle stays the same (by value)."""
        key = (job.id, kind)
        cached = self._steps_cache.get(key)
        if cached is not None and (cached[0] is job.oracle or cached[0] == job.oracle):
            return cached[1]
        full = {n.name: n.num_gpus for n in cluster.nodes}
        alloc = pack(sf, full, cluster, [kind])
        batch = job.requested_batch_size
        if alloc is None:
            return 0.0
        if job.oracle is None or not batch:
            return 1.0
        seconds = job.oracle.step_seconds(kind, alloc.placement(), batch)
        rate = 1.0 / seconds if seconds and seconds > 0 else 0.0
        self._steps_cache[key] = (job.oracle, rate)
        return rate

    def _run_round(self, jobs: Sequence[JobView], cluster: ClusterView, now: float) -> None:
        kinds = cluster.kinds
        active = {j.id for j in jobs}
        for gone in [j for j in self._state if j not in active]:
            del self._state[gone]
            self._workers.pop(gone, None)
            for kind in kinds:
                self._steps_cache.pop((gone, kind), None)
        half = self.round_seconds / 2
        for job in jobs:
            if job.id not in self._state:
                self._state[job.id] = _JobState({k: half for k in kinds})
                for kind in kinds:
                    self._kind_time[kind] = self._kind_time.get(kind, 0.0) + half
        if not jobs:
            self._allocations = {}
            return
        sf = np.array([self._scale_factor(j, cluster) for j in jobs], dtype=float)
        tput = np.array([
            [self._throughput(job, kind, int(sf[i]), cluster) for kind in kinds]
            for i, job in enumerate(jobs)
        ])
        capacity = np.array([cluster.gpus_of(k) for k in kinds], dtype=float)
        x = self._fractions(jobs, _Rates(tput, sf, capacity), now)
        self.last_fractions = {
            j.id: {k: float(x[i, c]) for c, k in enumerate(kinds)} for i, j in enumerate(jobs)
        }

        # Priorities: X over the share of each kind's time received so far.
        entries: list[tuple[float, float, int, int]] = []
        for c, kind in enumerate(kinds):
            for i, job in enumerate(jobs):
                if tput[i, c] <= 0 or sf[i] > capacity[c]:
                    continue
                share = self._state[job.id].time_on[kind] / self._kind_time[kind]
                priority = x[i, c] / share if x[i, c] > 0 else 0.0
                entries.append((priority, float(x[i, c]), c, i))
        entries.sort(key=lambda e: (-e[0], -e[1]))  # stable: kind order, then arrival order
        left = {k: int(capacity[c]) for c, k in enumerate(kinds)}
        chosen: dict[str, list[tuple[str, int]]] = {k: [] for k in kinds}
        taken: set[int] = set()
        for _, _, c, i in entries:
            kind, need = kinds[c], int(sf[i])
            if i in taken or left[kind] == 0 or need > left[kind]:
                continue
            left[kind] -= need
            taken.add(i)
            chosen[kind].append((jobs[i].id, need))

        self._workers = place_slots(chosen, cluster, self._workers)
        self._allocations = {
            job_id: slots_allocation(kind, workers)
            for job_id, (kind, workers) in self._workers.items()
        }
        for kind, members in chosen.items():
            for job_id, _ in members:
                self._state[job_id].time_on[kind] += self.round_seconds
                self._kind_time[kind] += self.round_seconds


class GavelPolicy(_GavelBase):
    """Gavel maximising the sum of job throughputs (Sia's `max_sum_throughput_perf`).

    `round_seconds`: length of a scheduling round (Sia ran Gavel with 360 s). `normalized`:
    divide each job's throughputs by their sum over kinds before summing (off in Gavel's and
    Sia's code, which sum raw steps per second).
    """

    name = "gavel"

    def __init__(self, seed: int = 0, round_seconds: float = 360.0, normalized: bool = False):
        super().__init__(seed=seed, round_seconds=round_seconds)
        self.normalized = normalized

    def _fractions(self, jobs: Sequence[JobView], rates: _Rates, now: float) -> NDArray[np.float64]:
        return max_sum_throughput(rates.throughputs, rates.scale_factors, rates.capacity,
                                  self.normalized)


class GavelFtfPolicy(_GavelBase):
    """Gavel minimising the worst finish-time fairness ratio (Sia's `finish_time_fairness_perf`).

    `round_seconds`: length of a scheduling round (360 s as Sia ran Gavel).
    """

    name = "gavel-ftf"

    def _fractions(self, jobs: Sequence[JobView], rates: _Rates, now: float) -> NDArray[np.float64]:
        remaining = np.ones(len(jobs))
        total = np.ones(len(jobs))
        for i, job in enumerate(jobs):
            if job.oracle is not None and job.requested_batch_size:
                steps = job.oracle.remaining_steps(job.requested_batch_size)
                if steps is not None:
                    remaining[i] = steps
            state = self._state[job.id]
            if state.total_steps is None:
                state.total_steps = float(remaining[i])
            total[i] = state.total_steps
        iso_rate = isolated_throughputs(rates.throughputs, rates.scale_factors, rates.capacity)
        prestart = np.array([
            self.round_seconds - job.submit_time % self.round_seconds + job.restart_s
            for job in jobs
        ])
        with np.errstate(divide="ignore"):
            isolated = prestart + np.where(iso_rate > 0, total / iso_rate, np.inf)
        elapsed = np.array([job.age(now) for job in jobs])
        return min_max_finish_time_fairness(
            rates.throughputs, rates.scale_factors, rates.capacity, elapsed, remaining, isolated
        )

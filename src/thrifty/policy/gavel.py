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
from scipy.optimize import linprog
from scipy.sparse import csr_matrix, vstack

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.placement import Worker, pack, place_slots, slots_allocation

_DECIMALS = 5  # X is rounded like this before use (Sia's code): removes solver noise
_BISECTION_TOLERANCE = 1e-3  # relative width at which the FTF bisection stops
_MAX_BISECTIONS = 40

# --- the linear programs ---------------------------------------------------------------------


def _base_constraints(
    throughputs: NDArray[np.float64],
    scale_factors: NDArray[np.float64],
    capacity: NDArray[np.float64],
    multiplicity: NDArray[np.float64] | None = None,
) -> tuple[csr_matrix, NDArray[np.float64], list[tuple[float, float]]]:
    """Σ_kind X ≤ 1 per row, Σ_row mult·sf·X ≤ capacity per kind; X fixed at 0 where a row
    cannot run (no throughput, or more GPUs than the kind has)."""
    rows, kinds = throughputs.shape
    mult = np.ones(rows) if multiplicity is None else multiplicity
    r_idx: list[int] = []
    c_idx: list[int] = []
    vals: list[float] = []
    for i in range(rows):
        for k in range(kinds):
            var = i * kinds + k
            r_idx += [i, rows + k]
            c_idx += [var, var]
            vals += [1.0, float(mult[i] * scale_factors[i])]
    a_ub = csr_matrix((vals, (r_idx, c_idx)), shape=(rows + kinds, rows * kinds))
    b_ub = np.concatenate([np.ones(rows), capacity.astype(float)])
    runnable = (throughputs > 0) & (scale_factors[:, None] <= capacity[None, :])
    bounds = [(0.0, 1.0 if ok else 0.0) for ok in runnable.ravel()]
    return a_ub, b_ub, bounds


def _solve(
    objective: NDArray[np.float64],
    a_ub: csr_matrix,
    b_ub: NDArray[np.float64],
    bounds: list[tuple[float, float]],
) -> NDArray[np.float64] | None:
    """Minimise objective·x; None when infeasible."""
    result = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if result.status == 2:
        return None
    if result.status != 0 or result.x is None:
        raise ThriftyError(f"Gavel's allocation LP failed: {result.message}")
    return np.asarray(result.x, dtype=float)


def _clean(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(np.round(x, _DECIMALS), 0.0, 1.0)


def max_sum_throughput(
    throughputs: NDArray[np.float64],
    scale_factors: NDArray[np.float64],
    capacity: NDArray[np.float64],
    normalized: bool = False,
) -> NDArray[np.float64]:
    """Time fractions X[job, kind] maximising Σ throughput·X (Gavel's max-sum-throughput).

    `throughputs[j, k]`: steps per second of job j on kind k (0: cannot run there);
    `scale_factors[j]`: GPUs job j needs; `capacity[k]`: GPUs of kind k. Identical rows share
    one variable, so identical jobs get identical time fractions.
    """
    throughputs = np.asarray(throughputs, dtype=float)
    scale_factors = np.asarray(scale_factors, dtype=float)
    capacity = np.asarray(capacity, dtype=float)
    jobs, kinds = throughputs.shape
    if jobs == 0:
        return np.zeros((0, kinds))
    classes: dict[tuple[float, ...], int] = {}
    member = np.empty(jobs, dtype=int)
    for j in range(jobs):
        key = (float(scale_factors[j]), *map(float, throughputs[j]))
        member[j] = classes.setdefault(key, len(classes))
    count = np.bincount(member, minlength=len(classes)).astype(float)
    first = np.array([int(np.flatnonzero(member == c)[0]) for c in range(len(classes))])
    rows, sf = throughputs[first], scale_factors[first]
    value = rows.copy()
    if normalized:
        totals = value.sum(axis=1, keepdims=True)
        value = np.divide(value, totals, out=np.zeros_like(value), where=totals > 0)
    a_ub, b_ub, bounds = _base_constraints(rows, sf, capacity, count)
    x = _solve(-(value * count[:, None]).ravel(), a_ub, b_ub, bounds)
    assert x is not None  # X = 0 is always feasible
    return _clean(x.reshape(len(classes), kinds)[member])


def isolated_throughputs(
    throughputs: NDArray[np.float64],
    scale_factors: NDArray[np.float64],
    capacity: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Each job's throughput under Gavel's "isolated" split: every kind divided evenly among the
    jobs (in GPUs), scaled down uniformly until no job is given more than all of its time."""
    return (np.asarray(throughputs) * isolated_split(scale_factors, capacity)).sum(axis=1)


def isolated_split(
    scale_factors: NDArray[np.float64], capacity: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Gavel's isolated time fractions: each kind's GPUs split evenly over the jobs, divided by
    each job's GPU count, all scaled so that the largest row sums to 1. A kind with fewer GPUs
    than a job needs gives that job nothing (it could not run there)."""
    sf = np.asarray(scale_factors, dtype=float)
    cap = np.asarray(capacity, dtype=float)
    if len(sf) == 0:
        return np.zeros((0, len(cap)))
    x = cap[None, :] / len(sf) / sf[:, None]
    x = np.where(sf[:, None] <= cap[None, :], x, 0.0)
    top = x.sum(axis=1).max()
    return x / top if top > 0 else x


def finish_time_ratios(
    x: NDArray[np.float64],
    throughputs: NDArray[np.float64],
    elapsed: NDArray[np.float64],
    remaining_steps: NDArray[np.float64],
    isolated_seconds: NDArray[np.float64],
) -> NDArray[np.float64]:
    """ρ per job: (age + remaining steps / throughput under X) / isolated time (∞ if starved)."""
    rate = (np.asarray(throughputs) * np.asarray(x)).sum(axis=1)
    with np.errstate(divide="ignore"):
        finish = np.asarray(elapsed) + np.where(rate > 0, remaining_steps / rate, np.inf)
    return finish / np.asarray(isolated_seconds)


def min_max_finish_time_fairness(
    throughputs: NDArray[np.float64],
    scale_factors: NDArray[np.float64],
    capacity: NDArray[np.float64],
    elapsed: NDArray[np.float64],
    remaining_steps: NDArray[np.float64],
    isolated_seconds: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Time fractions X minimising the worst finish-time ratio ρ (Gavel's FTF policy).

    ρ_j ≤ ρ is linear in X for fixed ρ: throughput_j(X) ≥ remaining_j / (ρ·isolated_j − age_j).
    ρ is found by bisection between what each job could reach alone and the equal split; among
    the allocations reaching it, the one with the largest normalised total throughput is kept.
    Jobs that cannot run anywhere are given nothing.
    """
    throughputs = np.asarray(throughputs, dtype=float)
    sf = np.asarray(scale_factors, dtype=float)
    capacity = np.asarray(capacity, dtype=float)
    jobs, kinds = throughputs.shape
    x_all = np.zeros((jobs, kinds))
    runnable = ((throughputs > 0) & (sf[:, None] <= capacity[None, :])).any(axis=1)
    if not runnable.any():
        return x_all
    idx = np.flatnonzero(runnable)
    tput, sf = throughputs[idx], sf[idx]
    age = np.asarray(elapsed, dtype=float)[idx]
    steps = np.maximum(np.asarray(remaining_steps, dtype=float)[idx], 1e-12)
    iso = np.asarray(isolated_seconds, dtype=float)[idx]
    n = len(idx)
    a_ub, b_ub, bounds = _base_constraints(tput, sf, capacity)
    # Rows "−Σ_k T_jk X_jk ≤ −demand_j", one per job, stacked under the base constraints.
    r = np.repeat(np.arange(n), kinds)
    c = np.arange(n * kinds)
    throughput_rows = csr_matrix((-tput.ravel(), (r, c)), shape=(n, n * kinds))
    a_full = vstack([a_ub, throughput_rows]).tocsr()
    best_alone = (tput * np.minimum(1.0, capacity[None, :] / sf[:, None])).max(axis=1)
    lo = float(np.max((age + steps / best_alone) / iso))
    split = isolated_split(sf, capacity) * (tput > 0)
    split_rate = (tput * split).sum(axis=1)
    with np.errstate(divide="ignore"):
        hi = float(np.max((age + np.where(split_rate > 0, steps / split_rate, np.inf)) / iso))
    hi = max(hi, lo)

    def feasible(rho: float, objective: NDArray[np.float64]) -> NDArray[np.float64] | None:
        slack = rho * iso - age
        if np.any(slack <= 0):
            return None
        demand = steps / slack
        return _solve(objective, a_full, np.concatenate([b_ub, -demand]), bounds)

    zero = np.zeros(n * kinds)
    if feasible(lo, zero) is not None:
        hi = lo
    else:
        for _ in range(_MAX_BISECTIONS):
            if hi <= lo * (1 + _BISECTION_TOLERANCE):
                break
            mid = math.sqrt(lo * hi)
            if feasible(mid, zero) is None:
                lo = mid
            else:
                hi = mid
    share = tput / tput.sum(axis=1, keepdims=True)
    x = feasible(hi, -share.ravel())
    if x is None:  # no finite ratio reachable, or rounding at the boundary: the equal split
        x = split.ravel()
    x_all[idx] = _clean(x.reshape(n, kinds))
    return x_all


# --- the round-based mechanism ---------------------------------------------------------------


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
    def _fractions(
        self,
        jobs: Sequence[JobView],
        throughputs: NDArray[np.float64],
        scale_factors: NDArray[np.float64],
        capacity: NDArray[np.float64],
        now: float,
    ) -> NDArray[np.float64]:
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
        x = self._fractions(jobs, tput, sf, capacity, now)
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

    def _fractions(
        self,
        jobs: Sequence[JobView],
        throughputs: NDArray[np.float64],
        scale_factors: NDArray[np.float64],
        capacity: NDArray[np.float64],
        now: float,
    ) -> NDArray[np.float64]:
        return max_sum_throughput(throughputs, scale_factors, capacity, self.normalized)


class GavelFtfPolicy(_GavelBase):
    """Gavel minimising the worst finish-time fairness ratio (Sia's `finish_time_fairness_perf`).

    `round_seconds`: length of a scheduling round (360 s as Sia ran Gavel).
    """

    name = "gavel-ftf"

    def _fractions(
        self,
        jobs: Sequence[JobView],
        throughputs: NDArray[np.float64],
        scale_factors: NDArray[np.float64],
        capacity: NDArray[np.float64],
        now: float,
    ) -> NDArray[np.float64]:
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
        iso_rate = isolated_throughputs(throughputs, scale_factors, capacity)
        prestart = np.array([
            self.round_seconds - job.submit_time % self.round_seconds + job.restart_seconds
            for job in jobs
        ])
        with np.errstate(divide="ignore"):
            isolated = prestart + np.where(iso_rate > 0, total / iso_rate, np.inf)
        elapsed = np.array([job.age(now) for job in jobs])
        return min_max_finish_time_fairness(
            throughputs, scale_factors, capacity, elapsed, remaining, isolated
        )

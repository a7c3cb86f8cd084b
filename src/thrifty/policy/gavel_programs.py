"""Gavel's linear programs: time fractions X[job, GPU kind] for its two objectives.

Source: D. Narayanan et al., "Heterogeneity-Aware Cluster Scheduling Policies for Deep Learning
Workloads", OSDI 2020 (§3-4), as Sia's evaluation (SOSP 2023) ran it. Pure functions of the
jobs' throughputs per kind, their GPU counts and the kinds' capacities; the round mechanism that
turns X into allocations is `thrifty.policy.gavel`, whose docstring says which choices are
Gavel's, which Sia's and which ours.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.sparse import csr_matrix, vstack

from thrifty.errors import ThriftyError

_DECIMALS = 5  # X is rounded like this before use (Sia's code): removes solver noise
_BISECTION_TOLERANCE = 1e-3  # relative width at which the FTF bisection stops
_MAX_BISECTIONS = 40



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
    hi = max(float(np.max(finish_time_ratios(split, tput, age, steps, iso))), lo)

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

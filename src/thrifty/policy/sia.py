"""Sia (Jayaram Subramanya et al., SOSP 2023): heterogeneity-aware goodput scheduling by an
integer program over (GPU kind, GPU count) configurations.

Each round every job's goodput on every configuration is normalised by its smallest non-zero
value, so a job's numbers are speedups over its worst useful option and jobs compare fairly. A
configuration other than the job's current one is discounted by the re-allocation factor
max(age − restarts·δ, 0) / (age + δ), with δ the job's restart delay. The program minimises
Σ x·U^p + λ_n·(jobs left without GPUs), p = −0.5, λ_n = 1.1; with normalised U ≥ 1, U^p ≤ 1 <
λ_n, so giving a job something always beats leaving it idle, and the concave power spreads GPUs
over jobs rather than piling them onto the best-scaling one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from thrifty.errors import ThriftyError
from thrifty.goodput import smallest_positive
from thrifty.policy.base import ClusterView, JobView
from thrifty.policy.configs import ConfigPolicy, config_of

MAX_SPEEDUP = 3000.0  # normalised goodputs are clipped here, as in Sia
# Sia's own estimate of a restart's cost per model (seconds), which its re-allocation factor uses.
RESTART_ESTIMATE_S = {"cifar10": 30.0, "deepspeech2": 25.0, "bert": 120.0, "yolov3": 45.0,
                      "imagenet": 250.0}


class SiaPolicy(ConfigPolicy):
    """Sia as its paper and artifact state it.

    `p`: fairness power of the objective (−0.5). `lambda_n`: penalty per job left without GPUs
    (1.1). `lambda_a`: Sia's re-allocation weight (0.01); its artifact defines it but the
    objective it solves does not use it, and neither does this one.
    """

    name = "sia"  # measures each new job on one GPU of every kind, as Sia does

    def __init__(
        self, seed: int = 0, p: float = -0.5, lambda_n: float = 1.1, lambda_a: float = 0.01
    ):
        if p >= 0:
            raise ThriftyError(f"sia: p must be negative (a fairness power), got {p}")
        self.seed = seed
        self.p = p
        self.lambda_n = lambda_n
        self.lambda_a = lambda_a

    def values(
        self, jobs: Sequence[JobView], cluster: ClusterView, goodput: np.ndarray, now: float
    ) -> np.ndarray:
        assert self._table is not None  # set by `allocate` before it asks
        configs = self._table.configs
        speedup = _normalised(goodput)
        for i, job in enumerate(jobs):
            current = config_of(job.allocation, configs)
            factor = _reallocation_factor(job, now)
            keep = speedup[i, current] if current >= 0 else None
            speedup[i] *= factor
            if keep is not None:
                speedup[i, current] = keep
        values = np.zeros_like(speedup)
        valid = speedup > 0
        values[valid] = self.lambda_n - speedup[valid] ** self.p
        return values


def _normalised(goodput: np.ndarray) -> np.ndarray:
    """Each row over its smallest positive entry, rounded to two decimals, clipped."""
    return np.minimum(np.round(goodput / smallest_positive(goodput), 2), MAX_SPEEDUP)


def _reallocation_factor(job: JobView, now: float) -> float:
    """Sia's discount for moving a job: restarts cost δ each, weighed against the job's age."""
    age = job.age(now)
    delta = RESTART_ESTIMATE_S.get(job.application, 30.0)
    if age < delta:
        return 1.0
    return max(age - job.restarts * delta, 0.0) / (age + delta)

"""How much faster a trial trains an epoch on k replicas than on one, from its recorded epochs.

The model is thrifty.goodput's throughput model, so that the simulator, the policies and the
training library share one formula: an optimizer step of global batch B on k replicas takes
`T_grad(B/k) + T_sync(k)` with `T_grad(m) = α_c + β_c·m` (γ = 1: no overlap of the last
backward pass with the all-reduce, the cautious choice). Data-parallel replicas keep the
trial's batch size, a hyperparameter, fixed: each computes B/k samples per step.

- α_c, β_c are fitted per (model, width) by non-negative least squares to the recorded
  seconds per step (epoch_s / steps) across batch sizes: α_c is the per-step cost that more
  replicas do not shrink (the optimizer step, launch overheads), β_c the per-sample compute.
- The all-reduce cannot be identified from one-replica recordings, so it is an assumption:
  `T_sync(k) = sync_ratio·α_c·(1 + 0.1·(k−2))` for k ≥ 2 — one all-reduce of these small models
  is latency-bound, about half the fixed per-step cost by default, growing 10% per extra replica.
- A replica computes at least `min_local_batch` samples, and k never exceeds the point where the
  speed-up stops growing. The speed-up T(1)/T(k) is below k by construction (α_c does not
  shrink and T_sync ≥ 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import median

import numpy as np
from scipy.optimize import nnls

from thrifty.goodput.throughput import ThroughputParams, step_time
from thrifty.tune.curves import Config, CurveSet

SYNC_RATIO = 0.5  # one all-reduce ≈ half the fixed per-step cost (assumption, see above)
SYNC_GROWTH = 0.1  # ... and 10% more per replica beyond two
MIN_LOCAL_BATCH = 4  # samples per replica per step, below which a split is not worth making


@dataclass(frozen=True)
class ReplicaSpeedup:
    """Speed-up of data-parallel replicas for one kind of trial (one model and width)."""

    params: ThroughputParams
    min_local_batch: int = MIN_LOCAL_BATCH

    def step_s(self, replicas: int, batch_size: int) -> float:
        """Seconds per optimizer step of global batch `batch_size` on `replicas` replicas."""
        return float(step_time(self.params, 1, replicas, batch_size / replicas))

    def speedup(self, replicas: int, batch_size: int) -> float:
        """Epoch time on one replica over epoch time on `replicas` (1.0 for one replica)."""
        replicas = min(replicas, self.useful_replicas(batch_size, replicas))
        if replicas <= 1:
            return 1.0
        return self.step_s(1, batch_size) / self.step_s(replicas, batch_size)

    def useful_replicas(self, batch_size: int, limit: int) -> int:
        """The most replicas, up to `limit`, before the speed-up stops growing."""
        most = max(1, min(limit, batch_size // self.min_local_batch))
        best, best_s = 1, self.step_s(1, batch_size)
        for k in range(2, most + 1):
            seconds = self.step_s(k, batch_size)
            if seconds >= best_s:
                break
            best, best_s = k, seconds
        return best


def params_from(alpha_c: float, beta_c: float, sync_ratio: float = SYNC_RATIO) -> ThroughputParams:
    """Throughput parameters of one node: fitted compute terms, the assumed all-reduce."""
    sync = sync_ratio * alpha_c
    return ThroughputParams(alpha_c=alpha_c, beta_c=beta_c, alpha_r=sync,
                            beta_r=SYNC_GROWTH * sync, alpha_n=sync, beta_n=SYNC_GROWTH * sync,
                            gamma=1.0)


def fit_compute(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(α_c, β_c) from (batch size, seconds per step) points; with one batch size seen, α_c is
    pinned at half the step time, as thrifty.goodput does."""
    sizes = sorted({b for b, _ in points})
    if len(sizes) < 2:
        batch, seconds = sizes[0], median(s for _, s in points)
        return seconds / 2, seconds / (2 * batch)
    design = np.array([[1.0, float(b)] for b, _ in points])
    (alpha, beta), _ = nnls(design, np.array([s for _, s in points]))
    floor = 1e-9
    return max(float(alpha), floor), max(float(beta), floor)


class SpeedupTable:
    """One `ReplicaSpeedup` per (model, width), fitted from a curve source."""

    def __init__(self, source: CurveSet, model: str, sync_ratio: float = SYNC_RATIO,
                 min_local_batch: int = MIN_LOCAL_BATCH) -> None:
        by_width: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for config in source.configs(model):
            for seed in source.seeds(config):
                curve = source.curve(config, seed)
                steps = math.ceil(curve.samples[0] / config.batch_size)
                by_width[config.width].append((config.batch_size, median(curve.epoch_s) / steps))
        self.models = {
            width: ReplicaSpeedup(params_from(*fit_compute(points), sync_ratio), min_local_batch)
            for width, points in by_width.items()
        }

    def for_config(self, config: Config) -> ReplicaSpeedup:
        return self.models[config.width]

"""An oracle answered from a job's own reported model, for the policies that ask one.

Gavel, Optimus and the carbon-aware wrapper were defined with oracle knowledge: a job's true
step time at a given placement and batch, and how many steps it has left. The simulator answers
from the job's measured profile; a live cluster has no such truth, only what the job reports, so
the live scheduler hands these policies `ModelOracle(model)` instead. Both answer the same
questions, so each policy has one code path, and on a live cluster it judges jobs by their fitted
models rather than silently falling back to rules of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thrifty.goodput import GoodputModel, gain, split_batch, step_time

__all__ = ["ModelOracle"]


@dataclass(frozen=True)
class ModelOracle:
    """The `Oracle` of `thrifty.policy.base`, predicted by a job's `GoodputModel`.

    Frozen and compared by value: a policy that keeps answers per job recomputes them when the
    job reports a different model, and only then.
    """

    model: GoodputModel

    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float | None:
        """Seconds per optimizer step of `batch_size` split over the placement's GPUs
        (accumulating where a GPU's share exceeds its memory limit), from the fitted throughput
        parameters of `kind`; None where the model has none for that kind, or nothing runs."""
        model = self.model
        replicas = sum(placement)
        if kind not in model.throughput or replicas <= 0 or batch_size <= 0:
            return None
        nodes = sum(1 for count in placement if count > 0)
        atomic, accum = split_batch(
            batch_size, replicas, model.limits.init_batch_size, model.local_cap(kind)
        )
        seconds = float(step_time(model.params(kind), nodes, replicas, int(atomic), int(accum)))
        return seconds if math.isfinite(seconds) and seconds > 0 else None

    def remaining_steps(self, batch_size: int) -> float | None:
        """Optimizer steps left at a fixed total batch: the scale-invariant progress still to
        make, over what one step at that batch is worth (its gain); None when the job has not
        declared where it ends."""
        model = self.model
        if model.target_progress is None or batch_size <= 0:
            return None
        left = max(model.target_progress - model.progress, 0.0)
        worth = float(gain(model.grad, model.limits.init_batch_size, batch_size))
        if not worth > 0 or not math.isfinite(worth):
            return None
        return left / worth

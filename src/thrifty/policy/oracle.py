"""An oracle for a live job: the answers a baseline wants, from the job's own GoodputModel.

Baselines such as Gavel and Optimus are defined with oracle knowledge of each job's speed and
length. A simulated job knows both exactly; a live job knows only what it has fitted, so this
answers from that fit (step time at a placement and batch; steps left, when the job declared
its length).
"""

from __future__ import annotations

from thrifty.goodput import GoodputModel, gain, split_batch, step_time


class ModelOracle:
    """`thrifty.policy.base.Oracle` answered from a fitted model rather than measurements."""

    def __init__(self, model: GoodputModel) -> None:
        self.model = model

    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float | None:
        """Predicted seconds per optimizer step, or None for a kind the model has not fitted."""
        model = self.model
        if kind not in model.throughput or not placement:
            return None
        replicas = sum(placement)
        atomic, accum = split_batch(batch_size, replicas, model.limits.init_batch_size,
                                    model.local_cap(kind), model.accumulation)
        return float(step_time(model.params(kind), len(placement), replicas, atomic, accum))

    def remaining_steps(self, batch_size: int) -> float:
        """Optimizer steps left at a fixed total batch (1 when the job declared no length)."""
        model = self.model
        if model.target_progress is None:
            return 1.0
        left = max(model.target_progress - model.progress, 0.0)
        per_step = float(gain(model.grad, model.limits.init_batch_size, batch_size))
        return max(left / max(per_step, 1e-12), 1.0)

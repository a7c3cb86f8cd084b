"""Learning-rate scaling rules: how much faster to move when the total batch grows.

Each rule returns a factor applied to every parameter group's learning rate for one optimizer
step, on top of whatever the user's scheduler set, so schedulers compose unchanged.

- `AdaScale` (Johnson et al., 2020), the default for SGD: the factor is the gain r = (σ²+|G|²) /
  (σ²/S + |G|²) at scale S = M/M0, i.e. how many initial-batch steps this step is worth. It is 1
  when the gradient is noise-free (a bigger batch buys nothing) and S when it is pure noise.
- `AdamScale`: Adam divides by the square root of the second moment, so the noise that matters is
  the one in that preconditioned space; the gain is measured there, and applied as its square root,
  the square-root rule that suits adaptive optimizers (Malladi et al., 2022), which reduces to it
  when the gradient is pure noise.
- `SqrtScale` and `LinearScale`: the classic fixed rules, √S and S.

Bounds. With S = M/M0 the batch scale, AdaScale's gain lies in [1, S] for S ≥ 1 (in [S, 1] for
the short last batch of an epoch, S < 1): a step is worth at least what a step at M0 is and at
most S of them, whatever the noise estimate says. `ScalingRule.bounds` states each rule's range
and `factor` is clipped to it, so that a wrong estimate (one measured at another batch or world
size, restored from a checkpoint) can never push the learning rate past linear scaling.
"""

from __future__ import annotations

import math

import torch

from thrifty.errors import ThriftyError
from thrifty.goodput.efficiency import GradientStats, gain


def gain_bounds(init_batch: int, batch: int) -> tuple[float, float]:
    """The range of AdaScale's gain at total batch `batch`: [1, S] with S = batch/init_batch,
    [S, 1] when the batch is smaller than the initial one."""
    scale = batch / init_batch
    return min(1.0, scale), max(1.0, scale)


def bounded_gain(stats: GradientStats, init_batch: int, batch: int) -> float:
    """AdaScale's gain (`goodput.efficiency.gain`), clipped to `gain_bounds`: the progress one
    step at `batch` makes, in steps at the initial batch."""
    low, high = gain_bounds(init_batch, batch)
    value = float(gain(stats, init_batch, batch))
    return min(max(value, low), high) if math.isfinite(value) else 1.0


class ScalingRule:
    """Base: the learning-rate factor for a step at total batch `batch`, never outside
    `bounds(init_batch, batch)`."""

    name = "none"
    preconditioned = False  # measure gradient noise in the optimizer's preconditioned space

    def bounds(self, init_batch: int, batch: int) -> tuple[float, float]:
        """The smallest and largest factor this rule gives at `batch`."""
        return 1.0, 1.0

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        return 1.0


class AdaScale(ScalingRule):
    """The gain r ∈ [1, S] (S = batch/init_batch; [S, 1] below the initial batch)."""

    name = "adascale"

    def bounds(self, init_batch: int, batch: int) -> tuple[float, float]:
        return gain_bounds(init_batch, batch)

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        if stats is None:
            return 1.0  # nothing measured yet: do not assume large batches help
        return bounded_gain(stats, init_batch, batch)


class AdamScale(ScalingRule):
    """√r ∈ [1, √S] (S = batch/init_batch; [√S, 1] below the initial batch)."""

    name = "adamscale"
    preconditioned = True

    def bounds(self, init_batch: int, batch: int) -> tuple[float, float]:
        low, high = gain_bounds(init_batch, batch)
        return math.sqrt(low), math.sqrt(high)

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        if stats is None:
            return 1.0
        return math.sqrt(bounded_gain(stats, init_batch, batch))


class SqrtScale(ScalingRule):
    name = "sqrt"

    def bounds(self, init_batch: int, batch: int) -> tuple[float, float]:
        value = math.sqrt(batch / init_batch)
        return value, value

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        return math.sqrt(batch / init_batch)


class LinearScale(ScalingRule):
    name = "linear"

    def bounds(self, init_batch: int, batch: int) -> tuple[float, float]:
        return batch / init_batch, batch / init_batch

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        return batch / init_batch


_RULES: dict[str, type[ScalingRule]] = {
    rule.name: rule for rule in (ScalingRule, AdaScale, AdamScale, SqrtScale, LinearScale)
}


def choose_rule(scaling: str | ScalingRule, optimizer: torch.optim.Optimizer) -> ScalingRule:
    """Resolve `scaling` ("auto", a rule name, or a rule); "auto" picks by optimizer type."""
    if isinstance(scaling, ScalingRule):
        return scaling
    if scaling == "auto":
        adaptive = isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW)
        return AdamScale() if adaptive else AdaScale()
    try:
        return _RULES[scaling]()
    except KeyError:
        known = ", ".join(["auto", *sorted(_RULES)])
        raise ThriftyError(f"unknown scaling rule {scaling!r}; use one of: {known}") from None

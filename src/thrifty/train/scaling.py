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
"""

from __future__ import annotations

import math

import torch

from thrifty.errors import ThriftyError
from thrifty.goodput.efficiency import GradientStats, gain


class ScalingRule:
    """Base: the learning-rate factor for a step at total batch `batch`."""

    name = "none"
    preconditioned = False  # measure gradient noise in the optimizer's preconditioned space

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        return 1.0


class AdaScale(ScalingRule):
    name = "adascale"

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        if stats is None:
            return 1.0  # nothing measured yet: do not assume large batches help
        return float(gain(stats, init_batch, batch))


class AdamScale(ScalingRule):
    name = "adamscale"
    preconditioned = True

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        if stats is None:
            return 1.0
        return math.sqrt(float(gain(stats, init_batch, batch)))


class SqrtScale(ScalingRule):
    name = "sqrt"

    def factor(self, stats: GradientStats | None, init_batch: int, batch: int) -> float:
        return math.sqrt(batch / init_batch)


class LinearScale(ScalingRule):
    name = "linear"

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

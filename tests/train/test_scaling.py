"""The learning-rate factor of every rule stays within its documented range."""

from __future__ import annotations

import math

import pytest
import torch

from thrifty.goodput.efficiency import GradientStats
from thrifty.train.scaling import AdamScale, AdaScale, LinearScale, SqrtScale, choose_rule

INIT = 32
EXTREMES = [
    GradientStats(sqr=0.0, var=1e-320),  # noise so faint it underflows when divided by S
    GradientStats(sqr=0.0, var=1.0),  # pure noise: the gain is S
    GradientStats(sqr=1.0, var=0.0),  # no noise: the gain is 1
    GradientStats(sqr=1e-300, var=1e300),
    GradientStats(sqr=0.0, var=0.0),
]


@pytest.mark.parametrize("batch", [1, 8, 32, 33, 128, 512, 4096])
@pytest.mark.parametrize("stats", EXTREMES + [GradientStats(sqr=1.0, var=v) for v in
                                              (0.01, 1.0, 37.0, 1e4)])
def test_adascale_gain_lies_between_one_and_the_batch_scale(stats, batch) -> None:
    scale = batch / INIT
    low, high = min(1.0, scale), max(1.0, scale)
    factor = AdaScale().factor(stats, INIT, batch)
    assert low <= factor <= high, (stats, batch, factor)
    root = AdamScale().factor(stats, INIT, batch)
    assert math.sqrt(low) <= root <= math.sqrt(high), (stats, batch, root)


@pytest.mark.parametrize("rule", [AdaScale(), AdamScale(), SqrtScale(), LinearScale(),
                                  choose_rule("none", torch.optim.SGD([torch.zeros(1)], 0.1))])
def test_every_rule_states_its_bounds_and_keeps_them(rule) -> None:
    for batch in (4, 32, 96, 1024):
        low, high = rule.bounds(INIT, batch)
        assert low <= high
        for stats in [None, *EXTREMES]:
            assert low - 1e-12 <= rule.factor(stats, INIT, batch) <= high + 1e-12

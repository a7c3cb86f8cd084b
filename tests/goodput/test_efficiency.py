from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty.errors import ThriftyError
from thrifty.goodput import GradientStats, efficiency, gain

stats_strategy = st.builds(
    GradientStats,
    sqr=st.floats(1e-6, 1e6, allow_nan=False),
    var=st.floats(0.0, 1e6, allow_nan=False),
)


@settings(max_examples=100, deadline=None)
@given(stats=stats_strategy, init=st.integers(1, 1024), factor=st.floats(1.0, 64.0))
def test_efficiency_is_one_at_the_initial_batch_and_falls_with_batch_size(
    stats: GradientStats, init: int, factor: float
) -> None:
    assert efficiency(stats, init, init) == pytest.approx(1.0)
    bigger = init * factor
    e = float(efficiency(stats, init, bigger))
    assert 0.0 < e <= 1.0 + 1e-12
    assert float(efficiency(stats, init, bigger * 1.5)) <= e + 1e-12
    # Gain (progress per step in initial-batch steps) lies between 1 and the batch ratio.
    g = float(gain(stats, init, bigger))
    assert 1.0 - 1e-9 <= g <= factor * (1 + 1e-9)


def test_efficiency_matches_the_noise_scale_formula() -> None:
    stats = GradientStats(sqr=2.0, var=6.0)
    init = 128
    noise = stats.noise_scale(init)  # B = M0·var/sqr = 384
    assert noise == pytest.approx(384.0)
    for batch in (128, 512, 4096):
        assert efficiency(stats, init, batch) == pytest.approx((noise + init) / (noise + batch))


def test_noise_free_gradients_make_large_batches_pure_waste() -> None:
    stats = GradientStats(sqr=1.0, var=0.0)
    assert efficiency(stats, 32, 320) == pytest.approx(0.1)
    assert np.all(gain(stats, 32, [32, 64, 320]) == pytest.approx(1.0))


def test_invalid_statistics_are_rejected() -> None:
    with pytest.raises(ThriftyError, match="non-negative"):
        GradientStats(sqr=-1.0, var=1.0)
    with pytest.raises(ThriftyError):
        GradientStats(sqr=float("nan"), var=1.0)

from __future__ import annotations

import numpy as np
import pytest

from thrifty.errors import ThriftyError
from thrifty.goodput.noise import NoiseEstimator, gradient_noise


def _pieces(rng: np.random.Generator, true_grad: np.ndarray, sigma2: float, n: int, b: int):
    """n partial gradients, each the mean of b per-sample gradients with covariance trace σ²."""
    dim = true_grad.size
    noise = rng.normal(0.0, np.sqrt(sigma2 / dim / b), size=(n, dim))
    return true_grad + noise


@pytest.mark.parametrize(("pieces", "batch"), [(2, 32), (4, 16), (8, 64)])
def test_estimator_recovers_known_noise_within_25_percent(pieces: int, batch: int) -> None:
    rng = np.random.default_rng(pieces * 100 + batch)
    dim = 500
    true_grad = rng.normal(size=dim)
    true_grad *= np.sqrt(2.0) / np.linalg.norm(true_grad)  # |G|² = 2
    sigma2 = 400.0  # noise scale B = σ²/|G|² = 200 samples
    est = NoiseEstimator(init_batch_size=batch, smoothing=0.98)
    for _ in range(600):
        g = _pieces(rng, true_grad, sigma2, pieces, batch)
        est.update(float(np.mean(np.sum(g**2, axis=1))), float(np.sum(g.mean(0) ** 2)),
                   pieces, batch)
    assert est.grad_sqr_ == pytest.approx(2.0, rel=0.25)
    assert est.sample_var_ == pytest.approx(sigma2, rel=0.25)
    assert est.noise_scale() == pytest.approx(200.0, rel=0.25)
    stats = est.stats()
    assert stats is not None
    assert stats.var == pytest.approx(est.sample_var_ / batch)


def test_one_step_estimate_is_exact_without_sampling_error() -> None:
    # Two pieces whose deviations are exactly ±d: |G|² and σ² follow in closed form.
    g = np.array([3.0, 4.0])
    d = np.array([1.0, 0.0])
    pieces = np.stack([g + d, g - d])
    sqr, var = gradient_noise(float(np.mean(np.sum(pieces**2, 1))), 25.0, 2, 8)
    # piece_sqr − mean_sqr = |d|² = σ²(1/8 − 1/16) → σ² = 16; |G|² = 25 − 16/16 = 24
    assert var == pytest.approx(16.0)
    assert sqr == pytest.approx(24.0)


def test_state_round_trips_and_bad_input_is_rejected() -> None:
    est = NoiseEstimator(32)
    assert est.stats() is None and est.noise_scale() is None
    est.update(10.0, 6.0, 4, 8)
    copy = NoiseEstimator(32)
    copy.load_state_dict(est.state_dict())
    assert copy.stats() == est.stats()
    with pytest.raises(ThriftyError, match="pieces"):
        gradient_noise(1.0, 1.0, 1, 8)
    with pytest.raises(ThriftyError, match="piece_batch"):
        gradient_noise(1.0, 1.0, 2, 0)
    with pytest.raises(ThriftyError, match="smoothing"):
        NoiseEstimator(8, smoothing=1.0)

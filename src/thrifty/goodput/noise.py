"""Gradient noise from the norms of gradients a job computes anyway (McCandlish et al., 2018).

A step averages `n` independent *pieces* — one per replica, or one per accumulation micro-step —
each the mean gradient of `b` samples. With true gradient G and per-sample covariance trace σ²:

    E |g_i|² = |G|² + σ²/b          (one piece)
    E |ḡ|²   = |G|² + σ²/(n·b)      (their mean)

so σ² and |G|² follow from the two measured squared norms without any extra backward pass.
Single-step estimates are noisy (often negative), so they are smoothed before use; only the
smoothed values become `GradientStats` (variance expressed at the job's initial batch, as the
efficiency model expects).
"""

from __future__ import annotations

from typing import Any

from thrifty.errors import ThriftyError
from thrifty.goodput.efficiency import GradientStats


def gradient_noise(
    piece_sqr: float, mean_sqr: float, pieces: int, piece_batch: float
) -> tuple[float, float]:
    """Unbiased one-step estimates of (|G|², σ² per sample) from gradient norms.

    `piece_sqr` is the average squared norm of the `pieces` partial gradients, `mean_sqr` the
    squared norm of their mean, `piece_batch` the samples behind each piece. The results may be
    negative (they are differences of noisy quantities); smooth them before clipping.
    """
    if pieces < 2:
        raise ThriftyError(f"pieces must be at least 2 to estimate gradient noise, got {pieces}")
    if piece_batch <= 0:
        raise ThriftyError(f"piece_batch must be positive, got {piece_batch}")
    total_batch = pieces * piece_batch
    # σ²·(1/b − 1/(n·b)) = E|g_i|² − E|ḡ|²
    var = (piece_sqr - mean_sqr) / (1.0 / piece_batch - 1.0 / total_batch)
    sqr = mean_sqr - var / total_batch
    return float(sqr), float(var)


class NoiseEstimator:
    """Exponentially smoothed |G|² and σ², bias-corrected like Adam's moments.

    `smoothing` is the weight kept by the old estimate at each update: 0.95 averages over
    roughly the last 20 steps, long enough to tame single-step noise and short enough to follow
    the noise scale as it grows during training.
    """

    def __init__(self, init_batch_size: int, smoothing: float = 0.95) -> None:
        if init_batch_size < 1:
            raise ThriftyError("init_batch_size must be at least 1")
        if not 0.0 <= smoothing < 1.0:
            raise ThriftyError(f"smoothing must lie in [0, 1), got {smoothing}")
        self.init_batch_size = init_batch_size
        self.smoothing = smoothing
        self._sqr = 0.0
        self._var = 0.0
        self._weight = 0.0  # total weight of the updates so far, for bias correction
        self.updates_ = 0

    def update(self, piece_sqr: float, mean_sqr: float, pieces: int, piece_batch: float) -> None:
        """Fold in one step's norms (see `gradient_noise`)."""
        sqr, var = gradient_noise(piece_sqr, mean_sqr, pieces, piece_batch)
        keep = self.smoothing
        self._sqr = keep * self._sqr + (1 - keep) * sqr
        self._var = keep * self._var + (1 - keep) * var
        self._weight = keep * self._weight + (1 - keep)
        self.updates_ += 1

    @property
    def grad_sqr_(self) -> float:
        return max(self._sqr / self._weight, 0.0) if self._weight > 0 else 0.0

    @property
    def sample_var_(self) -> float:
        """σ²: the trace of the per-sample gradient covariance."""
        return max(self._var / self._weight, 0.0) if self._weight > 0 else 0.0

    def stats(self) -> GradientStats | None:
        """Smoothed statistics at the initial batch, or None before the first update."""
        if self._weight <= 0:
            return None
        return GradientStats(sqr=self.grad_sqr_, var=self.sample_var_ / self.init_batch_size)

    def noise_scale(self) -> float | None:
        """B = σ²/|G|² in samples, or None before the first update."""
        stats = self.stats()
        return None if stats is None else stats.noise_scale(self.init_batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {
            "sqr": self._sqr,
            "var": self._var,
            "weight": self._weight,
            "updates": self.updates_,
            "smoothing": self.smoothing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sqr = float(state["sqr"])
        self._var = float(state["var"])
        self._weight = float(state["weight"])
        self.updates_ = int(state["updates"])
        self.smoothing = float(state["smoothing"])

"""Statistical efficiency of large batches, from the gradient noise scale (Pollux §3.1).

Training with a larger total batch M takes fewer steps per epoch but each step makes less than
M/M0 times the progress of a step at the initial batch M0. The gradient noise scale
B = M0·var/sqr predicts by how much: efficiency E(M) = (B + M0) / (B + M), the fraction of the
ideal progress per sample that is actually achieved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from thrifty.errors import ThriftyError


@dataclass(frozen=True)
class GradientStats:
    """Squared norm of the true gradient (`sqr`) and variance of its estimate at the initial
    batch (`var`)."""

    sqr: float
    var: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sqr) and np.isfinite(self.var)) or self.sqr < 0 or self.var < 0:
            raise ThriftyError(
                f"gradient statistics must be finite and non-negative, got sqr={self.sqr}, "
                f"var={self.var}"
            )

    def noise_scale(self, init_batch_size: float) -> float:
        """B = M0·var/sqr in samples; infinite when the gradient itself is (numerically) zero."""
        if self.sqr <= 0:
            return float("inf")
        return init_batch_size * self.var / self.sqr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradientStats:
        return cls(sqr=float(data["sqr"]), var=float(data["var"]))


def gain(
    stats: GradientStats, init_batch_size: float, batch_size: ArrayLike
) -> NDArray[np.float64]:
    """Progress of one step at `batch_size`, in steps at the initial batch (AdaScale's gain)."""
    scale = np.asarray(batch_size, dtype=float) / init_batch_size
    denom = stats.var / scale + stats.sqr
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (stats.var + stats.sqr) / denom, 1.0)


def efficiency(
    stats: GradientStats, init_batch_size: float, batch_size: ArrayLike
) -> NDArray[np.float64]:
    """E(M) = gain/scale = (B + M0)/(B + M): 1 at the initial batch, falling as M grows."""
    scale = np.asarray(batch_size, dtype=float) / init_batch_size
    return gain(stats, init_batch_size, batch_size) / scale

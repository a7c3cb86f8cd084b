"""Speed-up of a placement over a base allocation: the one table every scheduler builds.

A scheduler compares placements of different jobs by how much faster each job trains there than
at some base allocation (a fair share for Pollux, one GPU for the autoscaler, the slowest useful
configuration for Sia), so a large job's raw samples per second never drown a small one's. The
goodput at a placement comes from the job's `GoodputModel`, with batch size and accumulation
re-optimised for it; this module turns it into speed-ups, and keeps per-job tables so that a
round stays cheap at thousands of jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from thrifty.goodput.model import GoodputModel

__all__ = ["GoodputGrid", "progress_rate", "smallest_positive", "speedup_over_one_gpu"]

FloatArray = NDArray[np.float64]


def progress_rate(
    model: GoodputModel, kind: str, num_nodes: ArrayLike, num_replicas: ArrayLike
) -> FloatArray:
    """Scale-invariant steps per second at each placement (best goodput over the initial
    batch), 0 where the job cannot train: the unit in which jobs' progress compares."""
    return model.best(kind, num_nodes, num_replicas)[0] / model.limits.init_batch_size


def smallest_positive(values: FloatArray) -> FloatArray:
    """Each row's smallest positive entry (1 for a row without one), as a column: the base of a
    speed-up over a job's worst useful option."""
    positive = np.where(values > 0, values, np.inf)
    floor = positive.min(axis=1, keepdims=True)
    return np.where(np.isfinite(floor), floor, 1.0)


def speedup_over_one_gpu(goodput: FloatArray, count: NDArray[np.int64]) -> FloatArray:
    """Each row of `goodput` (jobs × configurations with `count` GPUs each) over its goodput on
    one GPU, else over its smallest positive entry, else unchanged."""
    one = np.where(count[None, :] == 1, goodput, 0.0).max(axis=1, initial=0.0)
    positive = np.where(goodput > 0, goodput, np.inf).min(axis=1, initial=np.inf)
    base = np.where(one > 0, one, np.where(np.isfinite(positive), positive, 1.0))
    return goodput / base[:, None]


@dataclass
class GoodputGrid:
    """Best goodput of one job on one kind for every (nodes, replicas) asked about so far, and
    its speed-up over a base placement.

    Built once per model, compared by value (`GoodputModel.same_predictions`: a model re-parsed
    every round, or one whose only change is its progress, keeps its grid), and extended to more
    replicas as the job's limit grows.
    """

    model: GoodputModel
    kind: str
    max_nodes: int
    values: FloatArray  # (max_nodes + 1, replicas + 1); 0 where impossible
    bases: dict[tuple[int, int], float] = field(default_factory=dict)

    @classmethod
    def build(cls, model: GoodputModel, kind: str, max_nodes: int) -> GoodputGrid:
        return cls(model, kind, max_nodes, np.zeros((max_nodes + 1, 1)))

    def fits(self, model: GoodputModel, kind: str, max_nodes: int) -> bool:
        """Whether this grid answers for `model` on `kind` up to `max_nodes` nodes."""
        return (self.kind == kind and self.max_nodes == max_nodes
                and (self.model is model or self.model.same_predictions(model)))

    def ensure(self, replicas: int) -> None:
        """Fill in placements up to `replicas` GPUs (only the new columns are computed)."""
        have = self.values.shape[1] - 1
        if replicas <= have:
            return
        reps = np.arange(have + 1, replicas + 1)
        nodes = np.arange(1, self.max_nodes + 1)
        grid_r, grid_n = np.meshgrid(reps, nodes)
        valid = grid_n <= grid_r
        goodput, _, _ = self.model.best(self.kind, grid_n[valid], grid_r[valid])
        extra = np.zeros((self.max_nodes + 1, len(reps)))
        extra[1:][valid] = goodput
        self.values = np.concatenate([self.values, extra], axis=1)

    def base(self, nodes: int, replicas: int) -> float:
        """Best goodput at the base placement, the denominator of every speed-up of this job.

        Where the base has more replicas than the largest batch can feed, the goodput at the
        smallest per-GPU batch (beyond the batch limit) stands in, as Pollux's batch optimiser
        evaluates it; failing that, the best goodput seen, failing that 1.
        """
        key = (nodes, replicas)
        if key not in self.bases:
            value = float(self.model.best(self.kind, nodes, replicas)[0])
            if value <= 0:
                lim = self.model.limits
                value = float(self.model.goodput(self.kind, nodes, replicas, lim.min_local_bsz))
            if not value > 0:
                positive = self.values[self.values > 0]
                value = float(positive.max()) if positive.size else 1.0
            self.bases[key] = value
        return self.bases[key]

    def speedups(self, replicas: int, base_nodes: int, base_replicas: int) -> FloatArray:
        """Speed-up at every (nodes, 0 … `replicas`) over the base placement."""
        self.ensure(replicas)
        return self.values[:, : replicas + 1] / self.base(base_nodes, base_replicas)

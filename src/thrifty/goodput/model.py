"""`GoodputModel`: everything a job knows about itself, and the batch size it should train at.

Goodput = throughput × statistical efficiency, in samples per second "at the efficiency of the
initial batch". A running job reports this model, a simulated job derives it from its profile, and
a scheduler reads it to compare placements; the same code answers all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from thrifty.errors import ThriftyError
from thrifty.goodput.efficiency import GradientStats, efficiency
from thrifty.goodput.throughput import ThroughputParams, throughput

_CANDIDATES = 50  # total batch sizes tried per placement, geometrically spaced
_EPS = 1e-8  # tolerance of the ceilings below


@dataclass(frozen=True)
class BatchLimits:
    """What the job allows: its initial total batch, the largest total batch it tolerates, and
    the per-GPU micro-batch range (the upper end is usually the GPU's memory limit)."""

    init_batch_size: int
    max_batch_size: int
    min_local_bsz: int = 1
    max_local_bsz: int | None = None

    def __post_init__(self) -> None:
        if self.init_batch_size < 1:
            raise ThriftyError("init_batch_size must be at least 1")
        if self.max_batch_size < self.init_batch_size:
            raise ThriftyError(
                f"max_batch_size ({self.max_batch_size}) is below init_batch_size "
                f"({self.init_batch_size}); raise max_batch_size or lower init_batch_size"
            )
        if self.min_local_bsz < 1:
            raise ThriftyError("min_local_bsz must be at least 1")
        if self.max_local_bsz is not None and self.max_local_bsz < self.min_local_bsz:
            raise ThriftyError(
                f"max_local_bsz ({self.max_local_bsz}) is below min_local_bsz "
                f"({self.min_local_bsz}); raise max_local_bsz or lower min_local_bsz"
            )
        if self.min_local_bsz > self.max_batch_size:
            raise ThriftyError(
                f"min_local_bsz ({self.min_local_bsz}) exceeds max_batch_size "
                f"({self.max_batch_size}): not even one GPU could train"
            )

    @property
    def local_cap(self) -> int:
        return self.max_local_bsz if self.max_local_bsz is not None else self.max_batch_size

    def max_replicas(self) -> int:
        """More replicas than this could not each get the minimum micro-batch."""
        return self.max_batch_size // self.min_local_bsz

    def to_dict(self) -> dict[str, Any]:
        return {
            "init_batch_size": self.init_batch_size,
            "max_batch_size": self.max_batch_size,
            "min_local_bsz": self.min_local_bsz,
            "max_local_bsz": self.max_local_bsz,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchLimits:
        local_max = data.get("max_local_bsz")
        return cls(
            init_batch_size=int(data["init_batch_size"]),
            max_batch_size=int(data["max_batch_size"]),
            min_local_bsz=int(data.get("min_local_bsz", 1)),
            max_local_bsz=None if local_max is None else int(local_max),
        )


def split_batch(
    batch_size: ArrayLike,
    num_replicas: ArrayLike,
    init_batch_size: int,
    max_local_bsz: int,
    accumulation: bool = True,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split a total batch over replicas into (per-GPU micro-batch, extra accumulation steps).

    Accumulate only when the per-GPU share exceeds what fits in memory; a single replica training
    above its initial batch accumulates at least once, because gradient statistics need two
    micro-batches to be estimated.
    """
    replicas = np.asarray(num_replicas, dtype=float)
    local = np.asarray(batch_size, dtype=float) / np.maximum(replicas, 1)
    if accumulation:
        accum = np.ceil(local / max_local_bsz - _EPS) - 1
        single_large = (replicas == 1) & (local > init_batch_size + _EPS)
        accum = np.where(single_large, np.maximum(accum, 1), accum)
    else:
        accum = np.zeros_like(local)
    accum = np.maximum(accum, 0).astype(np.int64)
    atomic = np.ceil(local / (accum + 1) - _EPS).astype(np.int64)
    return atomic, accum


@dataclass(frozen=True)
class GoodputModel:
    """A job's self-knowledge: throughput parameters per GPU kind, gradient noise, batch limits.

    `explored` maps each GPU kind to the most replicas the job has run with there; schedulers use it
    to grow a job gradually into placements its model has not seen (Pollux's exploration).
    `progress` counts scale-invariant steps (steps at the initial batch size that the job's
    statistical efficiency makes its real steps worth); `target_progress` is where the job ends,
    when it has declared its length (epochs), so a scheduler can weigh its remaining work.
    """

    throughput: Mapping[str, ThroughputParams]
    grad: GradientStats
    limits: BatchLimits
    accumulation: bool = True
    explored: Mapping[str, int] = field(default_factory=dict)
    local_caps: Mapping[str, int] = field(default_factory=dict)
    progress: float = 0.0
    target_progress: float | None = None

    def _predictive(self) -> tuple[Any, ...]:
        """Everything a prediction depends on, hashable: all but how far the job has come."""
        return (
            tuple(sorted(self.throughput.items())),
            self.grad,
            self.limits,
            self.accumulation,
            tuple(sorted(self.explored.items())),
            tuple(sorted(self.local_caps.items())),
        )

    def __hash__(self) -> int:
        # By value, like equality: a model re-parsed from the same report is the same key.
        return hash((self._predictive(), self.progress, self.target_progress))

    def same_predictions(self, other: GoodputModel) -> bool:
        """Whether `other` predicts the same goodput everywhere (it may have made more progress):
        what a scheduler's cached tables of this model compare on."""
        return (
            self.throughput == other.throughput
            and self.grad == other.grad
            and self.limits == other.limits
            and self.accumulation == other.accumulation
            and self.explored == other.explored
            and self.local_caps == other.local_caps
        )

    def local_cap(self, kind: str) -> int:
        """Largest per-GPU micro-batch on `kind`: its memory limit where known."""
        return int(self.local_caps.get(kind, self.limits.local_cap))

    def params(self, kind: str) -> ThroughputParams:
        try:
            return self.throughput[kind]
        except KeyError:
            known = ", ".join(sorted(self.throughput)) or "none"
            raise ThriftyError(
                f"no throughput model for GPU kind '{kind}' (known: {known})"
            ) from None

    def goodput(
        self,
        kind: str,
        num_nodes: ArrayLike,
        num_replicas: ArrayLike,
        atomic_bsz: ArrayLike,
        accum_steps: ArrayLike = 0,
    ) -> NDArray[np.float64]:
        """Samples per second times the statistical efficiency of the resulting total batch."""
        replicas = np.asarray(num_replicas)
        batch = replicas * np.asarray(atomic_bsz) * (np.asarray(accum_steps) + 1)
        rate = throughput(self.params(kind), num_nodes, replicas, atomic_bsz, accum_steps)
        return rate * efficiency(self.grad, self.limits.init_batch_size, batch)

    def best(
        self, kind: str, num_nodes: ArrayLike, num_replicas: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
        """Best (goodput, per-GPU micro-batch, accumulation steps) for each placement given.

        Placements that cannot train within the limits (no replicas, or too many for the largest
        batch) get goodput 0 and micro-batch 0.
        """
        nodes, replicas = np.broadcast_arrays(np.asarray(num_nodes), np.asarray(num_replicas))
        shape = nodes.shape
        nodes = nodes.reshape(-1).astype(float)
        replicas = replicas.reshape(-1).astype(float)
        lim = self.limits
        cap = self.local_cap(kind)
        low = np.maximum(lim.init_batch_size, lim.min_local_bsz * np.maximum(replicas, 1))
        high = np.maximum(low, lim.max_batch_size)
        batch = np.geomspace(low, high, _CANDIDATES)  # (candidates, placements)
        atomic, accum = split_batch(
            batch, replicas, lim.init_batch_size, cap, self.accumulation
        )
        count = replicas * (accum + 1)
        atomic = np.minimum(atomic, np.floor(lim.max_batch_size / np.maximum(count, 1)))
        atomic = atomic.astype(np.int64)
        valid = (
            (replicas > 0)
            & (atomic >= lim.min_local_bsz)
            & (atomic <= cap)
            & (replicas * atomic * (accum + 1) >= lim.init_batch_size)
        )
        safe_atomic = np.where(valid, atomic, 1)
        safe_nodes = np.maximum(nodes, 1)
        safe_replicas = np.maximum(replicas, 1)
        values = self.goodput(kind, safe_nodes, safe_replicas, safe_atomic, accum)
        values = np.where(valid, values, 0.0)
        pick = np.argmax(values, axis=0)
        cols = np.arange(values.shape[1])
        best_value = values[pick, cols]
        found = best_value > 0
        return (
            best_value.reshape(shape),
            np.where(found, atomic[pick, cols], 0).reshape(shape),
            np.where(found, accum[pick, cols], 0).reshape(shape),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "throughput": {kind: p.to_dict() for kind, p in self.throughput.items()},
            "grad": self.grad.to_dict(),
            "limits": self.limits.to_dict(),
            "accumulation": self.accumulation,
            "explored": dict(self.explored),
            "local_caps": dict(self.local_caps),
            "progress": self.progress,
            "target_progress": self.target_progress,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GoodputModel:
        try:
            return cls(
                throughput={
                    kind: ThroughputParams.from_dict(p) for kind, p in data["throughput"].items()
                },
                grad=GradientStats.from_dict(data["grad"]),
                limits=BatchLimits.from_dict(data["limits"]),
                accumulation=bool(data.get("accumulation", True)),
                explored={k: int(v) for k, v in data.get("explored", {}).items()},
                local_caps={k: int(v) for k, v in data.get("local_caps", {}).items()},
                progress=float(data.get("progress", 0.0)),
                target_progress=(
                    None if data.get("target_progress") is None
                    else float(data["target_progress"])
                ),
            )
        except KeyError as missing:
            raise ThriftyError(f"goodput model lacks the field {missing}") from None


def growth_cap(explored_replicas: int, limits: BatchLimits) -> int:
    """Most replicas a job may be given now: twice what it has run with (at least one), and no
    more than its largest batch can feed. Its model is trusted only near what it has seen."""
    return max(1, min(2 * explored_replicas, limits.max_replicas())) if explored_replicas else 1

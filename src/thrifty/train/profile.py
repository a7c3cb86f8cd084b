"""Measured step times, grouped by configuration, and the throughput model fitted to them.

Each configuration (nodes, replicas, per-replica micro-batch) keeps its recent times of a whole
synchronised step and of its gradient all-reduce. Accumulation micro-steps do not
synchronise, so they are recorded as what they are: the compute time of that micro-batch, the
same as a single replica's step. The first steps after a change are skipped: they pay for warm-up
(allocator growth, caches), not the steady state the model should predict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thrifty.goodput.throughput import StepObservation, ThroughputParams, fit_throughput

_WARMUP = 2  # steps skipped after each change of configuration
_KEEP = 64  # recent steps kept per configuration


class StepProfile:
    """Running means of step and sync time per configuration, and the fitted model."""

    def __init__(self) -> None:
        # (nodes, replicas, atomic_bsz) -> recent (step seconds, sync seconds)
        self._table: dict[tuple[int, int, int], list[tuple[float, float]]] = {}
        self._last_key: tuple[int, int, int] | None = None
        self._since_change = 0
        self.params_: ThroughputParams | None = None

    def record(
        self, num_nodes: int, num_replicas: int, atomic_bsz: int, step: float, sync: float
    ) -> None:
        """Add one synchronised micro-step: `step` seconds, `sync` of them in the all-reduce."""
        key = (num_nodes, num_replicas, atomic_bsz)
        if key != self._last_key:
            self._last_key = key
            self._since_change = 0
        self._since_change += 1
        if self._since_change <= _WARMUP:
            return
        self._add(key, step, sync)

    def record_compute(self, atomic_bsz: int, seconds: float) -> None:
        """Add one accumulation micro-step: pure compute, as on a single replica."""
        self._add((1, 1, atomic_bsz), seconds, 0.0)

    def _add(self, key: tuple[int, int, int], step: float, sync: float) -> None:
        if step <= 0:
            return
        sync = min(max(sync, 0.0), 0.95 * step) if key[1] > 1 else 0.0
        samples = self._table.setdefault(key, [])
        samples.append((step, sync))
        del samples[:-_KEEP]

    def observations(self) -> list[StepObservation]:
        """Median step and sync time per configuration: robust to the odd slow step (a busy
        machine, a garbage collection) that a mean would let bias the model."""
        found = []
        for (nodes, replicas, bsz), samples in sorted(self._table.items()):
            steps = np.array([s for s, _ in samples])
            syncs = np.array([c for _, c in samples])
            found.append(
                StepObservation(nodes, replicas, bsz, float(np.median(steps)),
                                float(np.median(syncs)))
            )
        return found

    def fit(self) -> ThroughputParams | None:
        """Refit the throughput model to everything seen; None until something was measured."""
        observations = self.observations()
        if observations:
            self.params_ = fit_throughput(observations)
        return self.params_

    def max_replicas(self) -> int:
        return max((key[1] for key in self._table), default=0)

    def state_dict(self) -> dict[str, Any]:
        return {"table": [[*key, [list(s) for s in value]] for key, value in self._table.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._table = {
            (int(row[0]), int(row[1]), int(row[2])): [(float(a), float(b)) for a, b in row[3]]
            for row in state["table"]
        }
        self.fit()

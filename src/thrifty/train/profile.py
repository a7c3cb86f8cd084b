"""Measured step times, grouped by configuration, and the throughput model fitted to them.

Each configuration (nodes, replicas, per-replica micro-batch) keeps a sample of its times of a
whole synchronised step and of its gradient all-reduce. Accumulation micro-steps do not
synchronise, so they are recorded as what they are: the compute time of that micro-batch, the
same as a single replica's step. The first steps after a change are skipped, accumulation
micro-steps included: they pay for warm-up (allocator growth, kernel selection for new shapes,
caches), not the steady state the model should predict.

The sample of a configuration spans its whole history, not only its latest steps. A shared
machine runs the same step at speeds that differ by half for seconds at a time; a configuration
represented only by its most recent window would carry that window's luck into the model, while
the configurations it is compared with were measured at other moments. A job that adapts comes
back to configurations it ran before, and each visit then adds to one sample that averages over
the machine's moods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thrifty.goodput.throughput import StepObservation, ThroughputParams, fit_throughput

_WARMUP = 2  # steps skipped after each change of configuration
_KEEP = 256  # most steps kept per configuration; older ones are thinned, not dropped

Key = tuple[int, int, int]  # (nodes, replicas, per-replica micro-batch)


class _History:
    """Up to `_KEEP` steps of one configuration, spread evenly over everything it ran.

    When full, every other kept step is dropped and from then on only every other new step is
    kept (then every fourth, ...): memory stays bounded while early and recent steps keep equal
    weight, deterministically.
    """

    def __init__(self, samples: list[tuple[float, float]] | None = None, stride: int = 1) -> None:
        self.samples = samples or []
        self.stride = stride
        self._skipped = 0

    def add(self, step: float, sync: float) -> None:
        self._skipped += 1
        if self._skipped < self.stride:
            return
        self._skipped = 0
        self.samples.append((step, sync))
        if len(self.samples) >= _KEEP:
            del self.samples[1::2]
            self.stride *= 2


class StepProfile:
    """Step and sync times per configuration, their medians, and the fitted model."""

    def __init__(self) -> None:
        self._table: dict[Key, _History] = {}
        self._last_key: Key | None = None
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
        """Add one accumulation micro-step: pure compute, as on a single replica.

        Micro-steps come before the synchronised step that ends their optimizer step, so they
        belong to the configuration `record` saw last only if its micro-batch is theirs, and
        they are past warm-up only once `_WARMUP` whole steps of it have completed.
        """
        last = self._last_key
        if last is None or last[2] != atomic_bsz or self._since_change < _WARMUP:
            return
        self._add((1, 1, atomic_bsz), seconds, 0.0)

    def _add(self, key: Key, step: float, sync: float) -> None:
        if step <= 0:
            return
        sync = min(max(sync, 0.0), 0.95 * step) if key[1] > 1 else 0.0
        self._table.setdefault(key, _History()).add(step, sync)

    def observations(self) -> list[StepObservation]:
        """Median step and sync time per configuration: robust to the odd slow step (a busy
        machine, a garbage collection) that a mean would let bias the model."""
        found = []
        for (nodes, replicas, bsz), history in sorted(self._table.items()):
            if not history.samples:
                continue
            samples = np.array(history.samples)
            found.append(
                StepObservation(nodes, replicas, bsz, float(np.median(samples[:, 0])),
                                float(np.median(samples[:, 1])))
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
        return {
            "table": [
                [*key, [list(s) for s in history.samples], history.stride]
                for key, history in self._table.items()
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a profile; rows without a stride come from checkpoints written before the
        history was thinned, and kept every step."""
        self._table = {
            (int(row[0]), int(row[1]), int(row[2])): _History(
                [(float(a), float(b)) for a, b in row[3]], int(row[4]) if len(row) > 4 else 1
            )
            for row in state["table"]
        }
        self.fit()

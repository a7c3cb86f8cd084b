"""Recorded learning curves as the simulator reads them: a small protocol and a CSV reader.

The simulator needs only four answers from a set of recorded curves: which models it holds,
which configurations each model was trained with, under which seeds, and the curve of one
(configuration, seed): accuracy and seconds after each epoch. `CurveSource` is that protocol;
`RecordedCurves` implements it over rows of the shared curves format
(`model,lr,batch_size,width,weight_decay,seed,epoch,accuracy,loss,epoch_s,samples`).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from thrifty.errors import InputError, ThriftyError

COLUMNS = ("model", "lr", "batch_size", "width", "weight_decay", "seed", "epoch", "accuracy",
           "loss", "epoch_s", "samples")
HYPERPARAMETERS = ("lr", "batch_size", "width", "weight_decay")


@dataclass(frozen=True, order=True)
class Config:
    """One trained configuration of a model: its hyperparameters."""

    lr: float
    batch_size: int
    width: int
    weight_decay: float

    def as_params(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in HYPERPARAMETERS}


@dataclass(frozen=True)
class Curve:
    """One run: validation accuracy after each epoch and the seconds each epoch took on one
    CPU thread (index 0 is epoch 1)."""

    accuracy: tuple[float, ...]
    epoch_s: tuple[float, ...]
    samples: int

    @property
    def epochs(self) -> int:
        return len(self.accuracy)


class CurveSource(Protocol):
    """What the simulator asks of recorded curves."""

    def models(self) -> list[str]: ...

    def configs(self, model: str) -> list[Config]: ...

    def seeds(self, model: str, config: Config) -> list[int]: ...

    def curve(self, model: str, config: Config, seed: int) -> Curve: ...


class RecordedCurves:
    """Curves held in memory, keyed by (model, configuration, seed)."""

    def __init__(self, curves: Mapping[tuple[str, Config, int], Curve]) -> None:
        if not curves:
            raise ThriftyError("no learning curves given; record some first")
        self._curves = dict(curves)
        self._configs: dict[str, set[Config]] = defaultdict(set)
        self._seeds: dict[tuple[str, Config], list[int]] = defaultdict(list)
        for model, config, seed in sorted(self._curves):
            self._configs[model].add(config)
            self._seeds[(model, config)].append(seed)

    def models(self) -> list[str]:
        return sorted(self._configs)

    def configs(self, model: str) -> list[Config]:
        if model not in self._configs:
            raise ThriftyError(
                f"no curves for model {model!r}; recorded: {', '.join(self.models())}"
            )
        return sorted(self._configs[model])

    def seeds(self, model: str, config: Config) -> list[int]:
        return list(self._seeds[(model, config)])

    def curve(self, model: str, config: Config, seed: int) -> Curve:
        try:
            return self._curves[(model, config, seed)]
        except KeyError:
            raise ThriftyError(f"no curve for {model} {config} seed {seed}") from None


def curves_from_rows(rows: Iterable[Mapping[str, str]], where: str = "(rows)") -> RecordedCurves:
    """Group rows of the shared format into curves; epochs must run 1..E without gaps."""
    points: dict[tuple[str, Config, int], dict[int, tuple[float, float, int]]] = defaultdict(dict)
    for line, row in enumerate(rows, start=2):
        try:
            config = Config(float(row["lr"]), int(row["batch_size"]), int(row["width"]),
                            float(row["weight_decay"]))
            key = (row["model"], config, int(row["seed"]))
            accuracy, epoch_s = float(row["accuracy"]), float(row["epoch_s"])
            points[key][int(row["epoch"])] = (accuracy, epoch_s, int(row["samples"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(where, f"unreadable row ({err}); expected columns "
                             f"{','.join(COLUMNS)}", line=line) from None
        if not math.isfinite(epoch_s) or epoch_s <= 0:
            raise InputError(where, f"epoch_s must be a positive number, got {epoch_s}",
                             line=line, field="epoch_s")
    curves = {}
    for key, by_epoch in points.items():
        if sorted(by_epoch) != list(range(1, len(by_epoch) + 1)):
            raise InputError(where, f"{key[0]} {key[1]} seed {key[2]}: epochs "
                             f"{sorted(by_epoch)} do not run 1..E")
        rows_in_order = [by_epoch[e] for e in sorted(by_epoch)]
        accuracy = tuple(a if math.isfinite(a) else 0.0 for a, _, _ in rows_in_order)
        curves[key] = Curve(accuracy, tuple(s for _, s, _ in rows_in_order),
                            rows_in_order[0][2])
    return RecordedCurves(curves)


def read_curves(path: Path | str) -> RecordedCurves:
    """Read a curves CSV in the shared format."""
    path = Path(path)
    if not path.is_file():
        raise ThriftyError(f"{path}: no such curves file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(str(path), f"missing columns {', '.join(missing)}", line=1)
        return curves_from_rows(reader, str(path))


def from_curve_set(curves: Iterable[Any]) -> RecordedCurves:
    """The simulator's view of any iterable of recorded runs that carry `config` (with `model`,
    `lr`, `batch_size`, `width`, `weight_decay`), `seed`, `accuracy`, `epoch_s` and `samples`
    (a count, or one count per epoch): such as `thrifty.tune.curves.CurveSet`."""
    held = {}
    for run in curves:
        c = run.config
        samples = run.samples if isinstance(run.samples, int) else run.samples[0]
        config = Config(float(c.lr), int(c.batch_size), int(c.width), float(c.weight_decay))
        accuracy = tuple(a if math.isfinite(a) else 0.0 for a in run.accuracy)
        held[(c.model, config, int(run.seed))] = Curve(accuracy, tuple(run.epoch_s),
                                                        int(samples))
    return RecordedCurves(held)

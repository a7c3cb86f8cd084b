"""Recorded learning curves: real training runs that a simulated sweep replays.

A sweep simulator needs what a trial would have reported, epoch by epoch, without training
anything: the validation accuracy after each epoch and the training seconds it took to get
there. `benchmarks/tune_record_curves.py` records those from real `thrifty.train` jobs into
`thrifty/tune/data/curves.csv` (one row per configuration, seed and epoch); this module reads
such a file once, checks every cell, and hands back typed values. A bad file fails here, naming
its line and column, rather than as a strange sweep result later.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from statistics import median
from typing import Any

from thrifty.errors import InputError, ThriftyError

HEADER = (
    "model", "lr", "batch_size", "width", "weight_decay", "seed", "epoch",
    "accuracy", "loss", "epoch_s", "samples",
)
MODELS = ("digits-mlp", "digits-cnn", "mnist1d-cnn")
HYPERPARAMETERS = ("lr", "batch_size", "width", "weight_decay")
SHIPPED = "curves.csv"


@dataclass(frozen=True, order=True)
class Config:
    """One point of the search space: what a trial trains, independent of its seed."""

    model: str
    lr: float
    batch_size: int
    width: int
    weight_decay: float

    def as_params(self) -> dict[str, float | int]:
        """The hyperparameters alone, as a sampler suggests them."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    def label(self) -> str:
        return (
            f"{self.model} lr={self.lr:g} bs={self.batch_size} w={self.width} "
            f"wd={self.weight_decay:g}"
        )


@dataclass(frozen=True)
class Curve:
    """One training run of `config` from `seed`: per-epoch values, epoch 1 first.

    `loss` is `inf` for an epoch whose loss diverged. `epoch_s` is the training time of each
    epoch alone (evaluation excluded), on one CPU thread.
    """

    config: Config
    seed: int
    accuracy: tuple[float, ...]
    loss: tuple[float, ...]
    epoch_s: tuple[float, ...]
    samples: tuple[int, ...]

    @property
    def epochs(self) -> int:
        return len(self.accuracy)

    @property
    def final_accuracy(self) -> float:
        return self.accuracy[-1]

    @property
    def elapsed_s(self) -> tuple[float, ...]:
        """Training seconds spent by the end of each epoch (a running sum of `epoch_s`)."""
        total = 0.0
        out = []
        for seconds in self.epoch_s:
            total += seconds
            out.append(total)
        return tuple(out)

    def accuracy_at(self, epoch: int) -> float:
        """Validation accuracy after `epoch` (1-based), as the trial would report it."""
        return self.accuracy[self._index(epoch)]

    def elapsed_s_at(self, epoch: int) -> float:
        """Training seconds from the start of the run to the end of `epoch` (1-based)."""
        return sum(self.epoch_s[: self._index(epoch) + 1])

    def _index(self, epoch: int) -> int:
        if not 1 <= epoch <= self.epochs:
            raise ThriftyError(
                f"epoch {epoch} is outside {self.config.label()} seed {self.seed}'s recording "
                f"(epochs 1..{self.epochs}): ask for an epoch in that range"
            )
        return epoch - 1


@dataclass(frozen=True)
class CurveSet:
    """Every recorded curve of one file, looked up by configuration and seed."""

    curves: tuple[Curve, ...]
    source: str = "<curves>"
    _index: dict[tuple[Config, int], Curve] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(c.config, c.seed): c for c in self.curves})

    def __len__(self) -> int:
        return len(self.curves)

    def __iter__(self) -> Iterator[Curve]:
        return iter(self.curves)

    def models(self) -> tuple[str, ...]:
        """The models held: the examples' in their usual order, then any others by name."""
        held = {c.config.model for c in self.curves}
        return (*(m for m in MODELS if m in held), *sorted(held - set(MODELS)))

    def configs(self, model: str | None = None) -> tuple[Config, ...]:
        """The distinct configurations, sorted; only `model`'s when given."""
        found = {c.config for c in self.curves if model is None or c.config.model == model}
        return tuple(sorted(found))

    def seeds(self, config: Config) -> tuple[int, ...]:
        return tuple(sorted(c.seed for c in self.curves if c.config == config))

    def curve(self, config: Config, seed: int) -> Curve:
        found = self._index.get((config, seed))
        if found is None:
            seeds = self.seeds(config)
            hint = f"recorded seeds: {list(seeds)}" if seeds else "that configuration is absent"
            raise ThriftyError(
                f"{self.source} has no curve for {config.label()} seed {seed} ({hint}): "
                "pick a configuration from configs() and a seed from seeds(config)"
            )
        return found

    def curves_of(self, config: Config) -> tuple[Curve, ...]:
        return tuple(self._index[(config, s)] for s in self.seeds(config))

    def of_model(self, model: str) -> CurveSet:
        picked = tuple(c for c in self.curves if c.config.model == model)
        if not picked:
            raise ThriftyError(
                f"{self.source} has no curves of model {model!r}: choose one of "
                f"{list(self.models())}"
            )
        return CurveSet(picked, self.source)

    def epochs(self, model: str) -> int:
        """The epochs each of `model`'s curves holds (the same for all of them)."""
        return self.of_model(model).curves[0].epochs

    def final_accuracy(self, config: Config) -> float:
        """The mean final accuracy of `config` over its seeds."""
        runs = self.curves_of(config)
        return sum(c.final_accuracy for c in runs) / len(runs)

    def best_final_accuracy(self, model: str | None = None) -> float:
        """The highest seed-mean final accuracy of any configuration (of `model` when given):
        the target a sweep is judged against."""
        configs = self.configs(model)
        if not configs:
            raise ThriftyError(f"{self.source} has no curves of model {model!r}")
        return max(self.final_accuracy(c) for c in configs)

    def median_final_accuracy(self, model: str | None = None) -> float:
        configs = self.configs(model)
        if not configs:
            raise ThriftyError(f"{self.source} has no curves of model {model!r}")
        return median(self.final_accuracy(c) for c in configs)


# --- reading ---------------------------------------------------------------------------------


def load_curves(path: str | Path | None = None) -> CurveSet:
    """Read and check a curves CSV: `path`, or the file shipped with thrifty when None."""
    if path is None:
        shipped = resources.files("thrifty.tune").joinpath("data", SHIPPED)
        return parse_curves(shipped.read_text(encoding="utf-8"), f"thrifty/tune/data/{SHIPPED}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(str(path), f"cannot read the curves file ({err.strerror}): check the "
                         "path") from None
    return parse_curves(text, str(path))


def parse_curves(text: str, source: str = "<curves>") -> CurveSet:
    """Check `text` (a curves CSV) cell by cell and group its rows into curves."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise InputError(source, f"the file is empty: expected the header {','.join(HEADER)}", 1)
    _check_header(source, [h.strip() for h in header])
    rows: dict[tuple[Config, int], dict[int, tuple[int, float, float, float, int]]] = {}
    first_line: dict[tuple[Config, int], int] = {}
    for cells in reader:
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(HEADER):
            raise InputError(
                source, f"has {len(cells)} columns, expected {len(HEADER)} ({','.join(HEADER)})",
                line,
            )
        cell = _Cells(source, line, cells)
        config = Config(
            model=cell.get("model", _model),
            lr=cell.get("lr", _positive_float),
            batch_size=cell.get("batch_size", _positive_int),
            width=cell.get("width", _positive_int),
            weight_decay=cell.get("weight_decay", _non_negative_float),
        )
        seed = cell.get("seed", _non_negative_int)
        epoch = cell.get("epoch", _positive_int)
        key = (config, seed)
        epochs = rows.setdefault(key, {})
        first_line.setdefault(key, line)
        if epoch in epochs:
            raise InputError(
                source, f"epoch {epoch} of {config.label()} seed {seed} appears twice (first on "
                f"line {epochs[epoch][0]}): keep one row per epoch", line, _where("epoch"),
            )
        epochs[epoch] = (
            line,
            cell.get("accuracy", _fraction),
            cell.get("loss", _loss),
            cell.get("epoch_s", _positive_float),
            cell.get("samples", _positive_int),
        )
    if not rows:
        raise InputError(source, "has a header but no curves: record some first", 2)
    curves = [_curve(source, key, first_line[key], epochs) for key, epochs in rows.items()]
    _check_epochs_per_model(source, curves, first_line)
    return CurveSet(tuple(curves), source)


def _curve(
    source: str, key: tuple[Config, int], line: int,
    epochs: dict[int, tuple[int, float, float, float, int]],
) -> Curve:
    config, seed = key
    missing = sorted(set(range(1, max(epochs) + 1)) - set(epochs))
    if missing:
        raise InputError(
            source, f"{config.label()} seed {seed} (first row here) lacks epochs {missing}: a "
            "curve needs every epoch from 1 to its last; record it again", line, _where("epoch"),
        )
    ordered = [epochs[e] for e in sorted(epochs)]
    return Curve(
        config, seed,
        accuracy=tuple(r[1] for r in ordered), loss=tuple(r[2] for r in ordered),
        epoch_s=tuple(r[3] for r in ordered), samples=tuple(r[4] for r in ordered),
    )


def _check_epochs_per_model(
    source: str, curves: list[Curve], first_line: dict[tuple[Config, int], int]
) -> None:
    """Every curve of one model runs the same epochs, so that trials compare like with like."""
    expected: dict[str, Curve] = {}
    for curve in curves:
        ref = expected.setdefault(curve.config.model, curve)
        if curve.epochs != ref.epochs:
            raise InputError(
                source, f"{curve.config.label()} seed {curve.seed} (first row here) has "
                f"{curve.epochs} epochs but {ref.config.label()} seed {ref.seed} has "
                f"{ref.epochs}: record every curve of a model for the same number of epochs",
                first_line[(curve.config, curve.seed)], _where("epoch"),
            )


def _check_header(source: str, header: list[str]) -> None:
    if header == list(HEADER):
        return
    for column, (got, want) in enumerate(zip(header, HEADER, strict=False), 1):
        if got != want:
            raise InputError(
                source, f"header column {column} is {got!r}, expected {want!r} (the header is "
                f"{','.join(HEADER)})", 1, f"{want} (column {column})",
            )
    if len(header) < len(HEADER):
        raise InputError(
            source, f"the header lacks columns {list(HEADER[len(header):])}", 1,
            _where(HEADER[len(header)]),
        )
    raise InputError(
        source, f"the header has extra columns {header[len(HEADER):]}: remove them", 1,
        f"column {len(HEADER) + 1}",
    )


def _where(name: str) -> str:
    return f"{name} (column {HEADER.index(name) + 1})"


class _Cells:
    """One data row, parsed a named cell at a time so that an error says which."""

    def __init__(self, source: str, line: int, cells: list[str]) -> None:
        self.source = source
        self.line = line
        self.cells = dict(zip(HEADER, (c.strip() for c in cells), strict=True))

    def get(self, name: str, parse: Callable[[str], Any]) -> Any:
        raw = self.cells[name]
        try:
            return parse(raw)
        except ValueError as err:
            raise InputError(self.source, f"{raw!r}: {err}", self.line, _where(name)) from None


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if math.isnan(value):
        raise ValueError("expected a number, not NaN")
    return value


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _checked(parse: Callable[[str], Any], ok: Callable[[Any], bool],
             expected: str) -> Callable[[str], Any]:
    """`parse`, then a range check whose error says what was expected."""
    def check(raw: str) -> Any:
        value = parse(raw)
        if not ok(value):
            raise ValueError(f"expected {expected}")
        return value
    return check


_positive_float = _checked(_number, lambda v: math.isfinite(v) and v > 0,
                           "a finite number above 0")
_non_negative_float = _checked(_number, lambda v: math.isfinite(v) and v >= 0,
                               "a finite number of at least 0")
_fraction = _checked(_number, lambda v: 0.0 <= v <= 1.0, "an accuracy between 0 and 1")
_loss = _checked(_number, lambda v: v >= 0, "a loss of at least 0 (inf for a diverged epoch)")
_positive_int = _checked(_integer, lambda v: v >= 1, "a whole number of at least 1")
_non_negative_int = _checked(_integer, lambda v: v >= 0, "a whole number of at least 0")


def _model(raw: str) -> str:
    if raw not in MODELS:
        raise ValueError(f"unknown model: expected one of {', '.join(MODELS)}")
    return raw


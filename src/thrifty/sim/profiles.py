"""Measured application profiles: true step times and gradient statistics for the simulator.

Each application was profiled on real GPUs: step and sync times for many placements and per-GPU
batch sizes (per GPU kind), and full training runs at several total batch sizes recording the
gradient statistics per epoch. The simulator interpolates between these measurements exactly as
the reference simulators of Pollux and Sia do, so that policies are judged on the same ground.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.interpolate import LinearNDInterpolator, interp1d

from thrifty.errors import InputError, ThriftyError
from thrifty.goodput import GradientStats, gain

# Training length in epochs, as the Pollux artifact ran each model.
TRAINING_EPOCHS: Mapping[str, int] = {
    "bert": 2,
    "cifar10": 100,
    "deepspeech2": 80,
    "imagenet": 90,
    "ncf": 10,
    "yolov3": 50,
}


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(str(path), "profile file not found; check --data or the application name")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(str(path), f"missing column(s) {', '.join(missing)}", line=1)
        return list(reader)


def _number(path: Path, line: int, row: Mapping[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise InputError(str(path), f"not a number: {row[column]!r}", line, column) from None
    if not np.isfinite(value):
        raise InputError(str(path), f"not finite: {row[column]!r}", line, column)
    return value


def canonical_placement(placement: tuple[int, ...]) -> tuple[int, ...]:
    """GPUs per node with empty nodes dropped, as its lexicographically smallest rotation."""
    used = tuple(p for p in placement if p > 0)
    if not used:
        return used
    return min(used[i:] + used[:i] for i in range(len(used)))


@dataclass(frozen=True)
class Validation:
    """One profiled training run at a fixed total batch size, per epoch."""

    batch_size: int
    progress: np.ndarray  # cumulative scale-invariant iterations at the end of each epoch
    iteration: np.ndarray  # cumulative optimizer steps at the end of each epoch
    grad_sqr: np.ndarray
    grad_var: np.ndarray


class KindProfile:
    """Step and sync times of one application on one GPU kind."""

    def __init__(self, placements_path: Path, scalability_path: Path):
        self.placements_path = placements_path
        rows = _read_rows(placements_path, ("placement", "local_bsz", "step_time", "sync_time"))
        by_placement: dict[tuple[int, ...], list[tuple[float, float, float]]] = {}
        for line, row in enumerate(rows, start=2):
            digits = row["placement"].strip()
            if not digits.isdigit():
                raise InputError(str(placements_path), f"not a placement: {digits!r}", line,
                                 "placement")
            key = tuple(int(d) for d in digits)
            by_placement.setdefault(key, []).append(
                tuple(_number(placements_path, line, row, c)
                      for c in ("local_bsz", "step_time", "sync_time"))
            )
        self._exact: dict[tuple[int, ...], interp1d] = {}
        self._largest: dict[tuple[int, ...], int] = {}
        # Placements of the same shape (nodes, replicas) are averaged into one point per batch:
        # duplicate points would leave the triangulation to pick one of them arbitrarily.
        shapes: dict[tuple[int, int, float], list[tuple[float, float]]] = {}
        for key, values in by_placement.items():
            arr = np.array(sorted(values))
            self._exact[key] = interp1d(arr[:, 0], arr[:, 1:], axis=0)
            self._largest[key] = int(arr[:, 0].max())
            for bsz, step, sync in values:
                shapes.setdefault((len(key), sum(key), bsz), []).append((step, sync))
        points: list[tuple[float, ...]] = [
            (*shape, *np.mean(times, axis=0)) for shape, times in shapes.items()
        ]
        scal = _read_rows(
            scalability_path, ("num_nodes", "num_replicas", "local_bsz", "step_time", "sync_time")
        )
        for line, row in enumerate(scal, start=2):
            points.append(tuple(
                _number(scalability_path, line, row, c)
                for c in ("num_nodes", "num_replicas", "local_bsz", "step_time", "sync_time")
            ))
        table = np.array(points)
        self._scalability = table[len(table) - len(scal):, :3] if scal else table[:0, :3]
        self.min_local_bsz = int(min(v[0] for vs in by_placement.values() for v in vs))
        self.max_local_bsz = int(max(v[0] for vs in by_placement.values() for v in vs))
        self._nd = LinearNDInterpolator(table[:, :3], table[:, 3:])
        # The measurements end at some size (16 T4 nodes, but only 3 RTX and 2 A100 nodes):
        # beyond it the time is held flat at the largest measured shape, so that a job spread
        # over more nodes than were profiled (clusters scaled past the papers') still runs.
        shapes_seen = table[:, :2].astype(int)
        self._max_nodes = int(shapes_seen[:, 0].max())
        self._max_replicas = {
            n: int(shapes_seen[shapes_seen[:, 0] == n, 1].max())
            for n in np.unique(shapes_seen[:, 0]).tolist()
        }

    @functools.cache  # noqa: B019 - profiles live for the whole process
    def max_local_bsz_at(self, placement: tuple[int, ...]) -> int:
        """Largest per-GPU batch measured at this placement (memory limits can depend on it),
        or for unmeasured placements the largest of the runs at least as big."""
        key = canonical_placement(placement)
        if key in self._largest:
            return self._largest[key]
        bigger = self._scalability[
            (self._scalability[:, 0] >= len(key)) & (self._scalability[:, 1] >= sum(key))
        ]
        return int(bigger[:, 2].max()) if len(bigger) else self.max_local_bsz

    @functools.cache  # noqa: B019
    def step_time(self, placement: tuple[int, ...], atomic_bsz: int) -> tuple[float, float] | None:
        """(seconds per micro-step with sync, seconds of sync), or None outside the measurements."""
        key = canonical_placement(placement)
        if not key:
            return None
        if key in self._exact:
            try:
                step, sync = self._exact[key](atomic_bsz)
            except ValueError:
                return None
        else:
            nodes = min(len(key), self._max_nodes)
            replicas = min(sum(key), self._max_replicas[nodes]) if len(key) > nodes else sum(key)
            step, sync = self._nd([nodes, replicas, atomic_bsz])[0]
        if not (np.isfinite(step) and np.isfinite(sync)) or step <= 0:
            return None
        return float(step), float(sync)


class AppProfile:
    """Everything measured about one application: validation runs and per-kind step times."""

    def __init__(self, name: str, validation_dir: Path, kinds: Mapping[str, KindProfile]):
        self.name = name
        self.kinds = dict(kinds)
        runs = sorted(validation_dir.glob("validation-*.csv"))
        if not runs:
            raise InputError(str(validation_dir), "no validation-<batch>.csv files found")
        self.validation: dict[int, Validation] = {}
        for path in runs:
            match = re.fullmatch(r"validation-(\d+)\.csv", path.name)
            if not match:
                raise InputError(str(path), "file name must be validation-<batch size>.csv")
            rows = _read_rows(path, ("progress", "iteration", "grad_sqr", "grad_var"))
            cols = {
                c: np.array([_number(path, i, r, c) for i, r in enumerate(rows, start=2)])
                for c in ("progress", "iteration", "grad_sqr", "grad_var")
            }
            bsz = int(match.group(1))
            self.validation[bsz] = Validation(bsz, **cols)
        self.batch_sizes = np.array(sorted(self.validation))
        self.init_batch_size = int(self.batch_sizes[0])
        self.max_batch_size = int(self.batch_sizes[-1])
        epochs = min(len(v.progress) for v in self.validation.values())
        self.epochs = min(TRAINING_EPOCHS.get(name, epochs), epochs)
        # Progress needed to finish each epoch: the least any profiled batch size needed.
        self.epoch_progress = np.min(
            [v.progress[: self.epochs] for v in self.validation.values()], axis=0
        )

    def kind(self, kind: str) -> KindProfile:
        try:
            return self.kinds[kind]
        except KeyError:
            known = ", ".join(sorted(self.kinds))
            raise ThriftyError(
                f"application '{self.name}' has no profile for GPU kind '{kind}' (known: {known})"
            ) from None

    def _bracket(self, batch_size: float) -> tuple[int, int, float]:
        """Profiled batch sizes around `batch_size` and the interpolation weight of the upper."""
        sizes = self.batch_sizes
        bsz = float(np.clip(batch_size, sizes[0], sizes[-1]))
        hi = int(np.searchsorted(sizes, bsz, side="left"))
        if sizes[hi] == bsz:
            return int(sizes[hi]), int(sizes[hi]), 0.0
        lo = hi - 1
        return int(sizes[lo]), int(sizes[hi]), (bsz - sizes[lo]) / (sizes[hi] - sizes[lo])

    @functools.cache  # noqa: B019
    def grad_stats(self, batch_size: float, epoch: int) -> tuple[float, float]:
        """True (sqr, var) during `epoch`, linear between the profiled batch sizes around it."""
        lo, hi, w = self._bracket(batch_size)
        a, b = self.validation[lo], self.validation[hi]
        epoch = min(epoch, self.epochs - 1)
        sqr = (1 - w) * a.grad_sqr[epoch] + w * b.grad_sqr[epoch]
        var = (1 - w) * a.grad_var[epoch] + w * b.grad_var[epoch]
        return float(sqr), float(var)

    @functools.cache  # noqa: B019
    def progress_gain(self, batch_size: int, epoch: int) -> float:
        """Scale-invariant iterations one step at `batch_size` makes during `epoch`.

        The simulator asks this for every simulated step of every job; the answer depends on the
        batch and epoch alone, so it is computed once per pair.
        """
        stats = GradientStats(*self.grad_stats(float(batch_size), epoch))
        return float(gain(stats, self.init_batch_size, batch_size))

    def iterations(self, batch_size: float, epoch: int) -> float:
        """Optimizer steps after `epoch` epochs at a fixed total batch (Optimus's oracle)."""
        if epoch <= 0:
            return 0.0
        lo, hi, w = self._bracket(batch_size)
        index = min(epoch, self.epochs) - 1
        return float((1 - w) * self.validation[lo].iteration[index]
                     + w * self.validation[hi].iteration[index])


class ProfileSet:
    """All applications of one data root, loaded lazily, for the GPU kinds a cluster uses.

    `layout` is "pollux" (one `placements.csv` per application, valid for kind `aws`) or "sia"
    (`placements-<kind>.csv` per kind, validation runs from the pollux folder beside it).
    """

    def __init__(self, data_root: Path, layout: str):
        if layout not in ("pollux", "sia"):
            raise ThriftyError(f"unknown profile layout '{layout}': use 'pollux' or 'sia'")
        self.data_root = Path(data_root)
        self.layout = layout
        self._apps: dict[tuple[str, tuple[str, ...]], AppProfile] = {}

    @property
    def applications(self) -> list[str]:
        folder = self.data_root / self.layout / "profiles"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def get(self, application: str, kinds: tuple[str, ...]) -> AppProfile:
        key = (application, kinds)
        if key not in self._apps:
            if application not in self.applications:
                known = ", ".join(self.applications) or "none"
                raise ThriftyError(f"unknown application '{application}' (known: {known})")
            validation_dir = self.data_root / "pollux" / "profiles" / application
            folder = self.data_root / self.layout / "profiles" / application
            profiles = {}
            for kind in kinds:
                if self.layout == "pollux":
                    if kind != "aws":
                        raise ThriftyError(
                            f"the pollux profiles were measured on kind 'aws' only, not '{kind}'"
                        )
                    profiles[kind] = KindProfile(
                        folder / "placements.csv", folder / "scalability.csv"
                    )
                else:
                    profiles[kind] = KindProfile(
                        folder / f"placements-{kind}.csv", folder / f"scalability-{kind}.csv"
                    )
            self._apps[key] = AppProfile(application, validation_dir, profiles)
        return self._apps[key]

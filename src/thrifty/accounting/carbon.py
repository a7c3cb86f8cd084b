"""Carbon intensity of the grid (gCO2/kWh): one static figure per region, or a time series.

A series is a step function: each reading holds until the next one. Simulated time 0 is the
series' first reading, and a job that outlives the series sees it again from the start (a month
of readings repeats), which keeps long simulations defined without inventing data.

`best_start` is the carbon-aware scheduling rule: among start times from now until the latest one
that still meets the deadline, pick the one whose run window has the lowest mean intensity.
`thrifty.policy.carbon_aware` applies it inside a scheduler; `kg_started_earlier` and
`ShiftOutcome` report what holding a job back saved against starting it at once.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from thrifty.errors import InputError, ThriftyError


class CarbonIntensity(Protocol):
    name: str

    def mean_g_per_kwh(self, start_s: float, end_s: float) -> float:
        """Time-weighted mean intensity over [start_s, end_s) (simulated seconds)."""
        ...


@dataclass(frozen=True)
class StaticIntensity:
    g_per_kwh: float
    name: str = "static"

    def __post_init__(self) -> None:
        if not math.isfinite(self.g_per_kwh) or self.g_per_kwh < 0:
            raise ThriftyError(f"carbon intensity must be non-negative, got {self.g_per_kwh}")

    def mean_g_per_kwh(self, start_s: float, end_s: float) -> float:
        return self.g_per_kwh


@dataclass(frozen=True, eq=False)
class IntensitySeries:
    """Readings at `offsets_s` (seconds from `origin`), each valid until the next."""

    name: str
    origin: datetime
    offsets_s: np.ndarray
    g_per_kwh: np.ndarray

    def __post_init__(self) -> None:
        if len(self.offsets_s) < 2 or len(self.offsets_s) != len(self.g_per_kwh):
            raise ThriftyError(f"carbon series '{self.name}' needs at least two readings")
        step = float(np.median(np.diff(self.offsets_s)))
        object.__setattr__(self, "_period", float(self.offsets_s[-1] + step))
        widths = np.diff(np.append(self.offsets_s, self._period))
        cumulative = np.concatenate([[0.0], np.cumsum(widths * self.g_per_kwh)])
        object.__setattr__(self, "_cum", cumulative)

    @property
    def period_s(self) -> float:
        return self._period  # type: ignore[attr-defined]

    def _integral(self, t: float) -> float:
        """∫ intensity dt from 0 to t, the series repeating with its period."""
        laps, rest = divmod(t, self.period_s)
        cum = self._cum  # type: ignore[attr-defined]
        i = int(np.searchsorted(self.offsets_s, rest, side="right")) - 1
        return laps * cum[-1] + cum[i] + (rest - self.offsets_s[i]) * self.g_per_kwh[i]

    def at(self, t_s: float) -> float:
        rest = t_s % self.period_s
        return float(self.g_per_kwh[int(np.searchsorted(self.offsets_s, rest, "right")) - 1])

    def mean_g_per_kwh(self, start_s: float, end_s: float) -> float:
        if end_s <= start_s:
            return self.at(start_s)
        return float((self._integral(end_s) - self._integral(start_s)) / (end_s - start_s))


def load_intensity_series(path: Path, name: str | None = None) -> IntensitySeries:
    """A CSV `Time,Carbon Intensity` (ISO times, gCO2/kWh), as in `shared/data/carbon/`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "carbon intensity file not found")
    times: list[datetime] = []
    values: list[float] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if len(fields) < 2:
            raise InputError(str(path), "expected columns Time,Carbon Intensity", line=1)
        t_col, v_col = fields[0], fields[1]
        for line, row in enumerate(reader, start=2):
            try:
                times.append(datetime.fromisoformat((row[t_col] or "").strip()))
            except ValueError:
                raise InputError(str(path), f"not a time: {row[t_col]!r}", line, t_col) from None
            try:
                value = float(row[v_col])
            except (TypeError, ValueError):
                raise InputError(str(path), f"not a number: {row[v_col]!r}", line, v_col) from None
            if not math.isfinite(value) or value < 0:
                raise InputError(str(path), f"intensity must be non-negative, got {value}", line,
                                 v_col)
            values.append(value)
    if len(times) < 2:
        raise InputError(str(path), "needs at least two readings")
    offsets = np.array([(t - times[0]).total_seconds() for t in times])
    if np.any(np.diff(offsets) <= 0):
        raise InputError(str(path), "times must increase strictly")
    return IntensitySeries(name or path.stem, times[0], offsets, np.array(values))


def kg_co2e(kwh: float, g_per_kwh: float) -> float:
    return kwh * g_per_kwh / 1000.0


@dataclass(frozen=True)
class StartChoice:
    """When to start a deferrable job, and the intensity of starting now versus then."""

    start_s: float
    now_g_per_kwh: float
    chosen_g_per_kwh: float

    @property
    def saving_fraction(self) -> float:
        if self.now_g_per_kwh <= 0:
            return 0.0
        return 1.0 - self.chosen_g_per_kwh / self.now_g_per_kwh


def best_start(
    intensity: CarbonIntensity,
    ready_s: float,
    duration_s: float,
    deadline_s: float,
    step_s: float = 900.0,
    fits: Callable[[float], bool] | None = None,
) -> StartChoice:
    """The start time in [ready, deadline − duration] (on a `step_s` grid) with the lowest mean
    intensity over the run. A job that cannot meet its deadline even now starts now.

    `fits(t)`, if given, rules out starts for which something else (a full cluster) says no: a
    scheduler uses it so that jobs do not all pick the same green hours. When no start fits, the
    job starts at `ready_s`: waiting would not make room in time."""
    if duration_s <= 0:
        raise ThriftyError(f"a job's duration must be positive, got {duration_s}")
    if step_s <= 0:
        raise ThriftyError(f"the search step must be positive, got {step_s}")
    now = intensity.mean_g_per_kwh(ready_s, ready_s + duration_s)
    latest = deadline_s - duration_s
    best: tuple[float, float] | None = None
    t = ready_s
    while t <= latest + 1e-9 or t == ready_s:
        if fits is None or fits(t):
            g = now if t == ready_s else intensity.mean_g_per_kwh(t, t + duration_s)
            if best is None or g < best[1] - 1e-12:
                best = (t, g)
        t += step_s

    start, chosen = best if best is not None else (ready_s, now)
    return StartChoice(start, now, chosen)


def kg_started_earlier(
    pieces: Iterable[tuple[float, float, float]], intensity: CarbonIntensity, earlier_s: float
) -> float:
    """kg CO2e of the same energy with every (kWh, start s, end s) piece moved `earlier_s`
    earlier: what a job held back for `earlier_s` would have emitted had it run as soon as it
    was ready, with the same run (same allocations, same queueing after release)."""
    return math.fsum(
        kg_co2e(kwh, intensity.mean_g_per_kwh(start - earlier_s, end - earlier_s))
        for kwh, start, end in pieces
    )


@dataclass(frozen=True)
class ShiftOutcome:
    """One job of a carbon-aware run: its CO2 as run, as it would have been started at once, and
    whether its deadline held. `deadline_s` and `end_s` are on the simulation clock."""

    job: str
    deadline_s: float | None
    held_s: float
    end_s: float | None
    kgco2e: float
    kgco2e_at_once: float

    @property
    def saved_kg(self) -> float:
        return self.kgco2e_at_once - self.kgco2e

    @property
    def met(self) -> bool | None:
        """None for a job without a deadline (or one that never finished, which did not meet it)."""
        if self.deadline_s is None:
            return None
        return self.end_s is not None and self.end_s <= self.deadline_s + 1e-6

    def to_dict(self) -> dict[str, float | str | bool | None]:
        return {
            "job": self.job,
            "deadline_s": self.deadline_s,
            "held_s": self.held_s,
            "end_s": self.end_s,
            "kgco2e": self.kgco2e,
            "kgco2e_at_once": self.kgco2e_at_once,
            "saved_kg": self.saved_kg,
            "deadline_met": self.met,
        }


def country_intensity(iso_code: str) -> StaticIntensity:
    """A country's yearly mean grid intensity, from the energy-mix data CodeCarbon ships.

    It is the figure a live cluster needs when no time series of its grid is at hand: one number
    per country (ISO 3166 alpha-3 code, e.g. DEU, FRA, USA), kept current by CodeCarbon's releases.
    """
    from codecarbon.input import DataSource

    code = iso_code.strip().upper()
    mix = DataSource().get_global_energy_mix_data()
    entry = mix.get(code)
    if entry is None or "carbon_intensity" not in entry:
        raise ThriftyError(
            f"unknown country code '{iso_code}': give an ISO 3166 alpha-3 code such as DEU, FRA "
            f"or USA (CodeCarbon's energy-mix data knows {len(mix)} countries)"
        )
    return StaticIntensity(
        float(entry["carbon_intensity"]),
        name=f"{entry.get('country_name', code)} ({entry.get('year', '?')} mean, CodeCarbon)",
    )

"""Energy of a job: board power × utilisation × time × PUE, unless the hardware measured it.

Modelled energy is an estimate from each board's rated power (TDP): a training GPU draws close to
it, an allocated but idle one a fraction. Where a job measured its own energy (NVML counters or
CodeCarbon inside a live job), that figure replaces the model and is labelled "measured", so a
report never mixes the two silently.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from thrifty.errors import InputError, ThriftyError

EnergySource = Literal["measured", "modelled"]


def load_board_power(path: Path) -> dict[str, float]:
    """Board power in watts per accelerator, from a CSV `accelerator,tdp_watts[,note]`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "board power file not found")
    watts: dict[str, float] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("accelerator", "tdp_watts") if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(str(path), f"missing column(s) {', '.join(missing)}", line=1)
        for line, row in enumerate(reader, start=2):
            name = (row["accelerator"] or "").strip()
            if not name:
                raise InputError(str(path), "empty accelerator name", line, "accelerator")
            try:
                value = float(row["tdp_watts"])
            except (TypeError, ValueError):
                raise InputError(str(path), f"expected watts, got {row['tdp_watts']!r}", line,
                                 "tdp_watts") from None
            if not math.isfinite(value) or value <= 0:
                raise InputError(str(path), f"watts must be positive, got {value}", line,
                                 "tdp_watts")
            watts[name] = value
    return watts


@dataclass(frozen=True)
class PowerModel:
    """Turns GPU-seconds into kWh at the wall: board watts × utilisation × PUE.

    `accelerators` maps a GPU kind (as clusters name it) to the board in `board_watts`.
    """

    board_watts: Mapping[str, float]
    accelerators: Mapping[str, str]
    pue: float = 1.58
    busy_utilisation: float = 1.0
    idle_utilisation: float = 0.15

    def __post_init__(self) -> None:
        if self.pue < 1.0:
            raise ThriftyError(f"PUE must be at least 1.0, got {self.pue}")

    def watts(self, kind: str) -> float:
        """Rated board power of one GPU of `kind`."""
        board = self.accelerators.get(kind, kind)
        try:
            return float(self.board_watts[board])
        except KeyError:
            known = ", ".join(sorted(self.board_watts))
            raise ThriftyError(
                f"unknown GPU kind '{kind}' (board '{board}'): no board power for it "
                f"(known boards: {known})"
            ) from None

    def kw_per_gpu(self, kind: str, busy: bool = True) -> float:
        """kW at the wall for one GPU of `kind`, training (busy) or allocated but idle."""
        share = self.busy_utilisation if busy else self.idle_utilisation
        return self.watts(kind) * share * self.pue / 1000.0

    def kwh(self, kind: str, busy_gpu_seconds: float, idle_gpu_seconds: float = 0.0) -> float:
        return (
            self.kw_per_gpu(kind, True) * busy_gpu_seconds
            + self.kw_per_gpu(kind, False) * idle_gpu_seconds
        ) / 3600.0


@dataclass(frozen=True)
class EnergyReading:
    kwh: float
    source: EnergySource


def job_energy(modelled_kwh: float, measured_kwh: float | None = None) -> EnergyReading:
    """The measured figure where the hardware reported one, else the model's."""
    if measured_kwh is not None:
        if not math.isfinite(measured_kwh) or measured_kwh < 0:
            raise ThriftyError(f"measured energy must be non-negative, got {measured_kwh}")
        return EnergyReading(float(measured_kwh), "measured")
    return EnergyReading(float(modelled_kwh), "modelled")

"""`JobReport`: what a running job tells the scheduler, parsed once where it arrives.

A job publishes one every few seconds (`thrifty.train.report.Reporter`); executors pick it up and
the scheduler stores it as JSON. Everything that reads a report (the policy's views, usage and
energy accounting, job summaries, tuning) reads this typed value, never the raw dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thrifty.errors import ThriftyError
from thrifty.goodput import GoodputModel


def _number(data: Mapping[str, Any], key: str, kind: type, optional: bool = True) -> Any:
    value = data.get(key)
    if value is None:
        if optional:
            return None
        raise ThriftyError(f"job report: field '{key}' is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThriftyError(f"job report: field '{key}' must be a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ThriftyError(f"job report: field '{key}' must be a whole number, got {value!r}")
        return int(value)
    if not math.isfinite(value):
        raise ThriftyError(f"job report: field '{key}' must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class JobReport:
    """One report of a training job.

    `step` counts optimizer steps, `epoch` the current epoch, `batch_size` the total batch it trains
    at now. `startup_s` is the seconds all attempts so far spent starting (the measured cost of a
    restart); `energy_kwh` what its GPUs drew over all attempts (None unless every attempt measured
    it). `metrics` holds whatever the training script chose to report by name (a validation loss,
    an accuracy): what a tuner compares trials by.
    """

    model: GoodputModel
    job_id: str = ""
    step: int = 0
    epoch: int = 0
    batch_size: int | None = None
    startup_s: float | None = None
    energy_kwh: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "step": self.step,
            "epoch": self.epoch,
            "batch_size": self.batch_size,
            "model": self.model.to_dict(),
            "startup_s": self.startup_s,
            "energy_kwh": self.energy_kwh,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobReport:
        """Parse a report as received; a malformed one raises ThriftyError naming the field."""
        if not isinstance(data, Mapping):
            raise ThriftyError(f"job report must be a JSON object, got {type(data).__name__}")
        raw_model = data.get("model")
        if not isinstance(raw_model, Mapping):
            raise ThriftyError("job report: field 'model' must be a GoodputModel object")
        try:
            model = GoodputModel.from_dict(raw_model)
        except ThriftyError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise ThriftyError(f"job report: field 'model' is malformed ({err!r})") from None
        raw_metrics = data.get("metrics") or {}
        if not isinstance(raw_metrics, Mapping):
            raise ThriftyError("job report: field 'metrics' must map names to numbers")
        metrics = {str(k): _number(raw_metrics, k, float, optional=False) for k in raw_metrics}
        return cls(
            model=model,
            job_id=str(data.get("job_id") or ""),
            step=_number(data, "step", int) or 0,
            epoch=_number(data, "epoch", int) or 0,
            batch_size=_number(data, "batch_size", int),
            startup_s=_number(data, "startup_s", float),
            energy_kwh=_number(data, "energy_kwh", float),
            metrics=metrics,
        )

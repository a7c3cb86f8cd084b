"""Restart overhead and measured energy, summed over every attempt of a job.

A job the scheduler resizes runs as several attempts, each resuming from the last one's
checkpoint. Accounting bills the seconds each attempt spent starting (building the model,
restoring, the first step) and the energy the GPUs drew, so each attempt adds its own to the
totals the checkpoint it resumed from carried, and saves the sums in its own checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _add(before: float | None, mine: float | None) -> float | None:
    """A total over attempts; unknown (None) as soon as any part of it is."""
    if before is None or mine is None:
        return None
    return before + mine


class AttemptTotals:
    """This attempt's start-up seconds and kWh on top of what the earlier attempts reported."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._born = clock()
        self.attempt_startup_s: float | None = None  # start to the end of the first step
        self.attempt_kwh: float | None = None  # None unless every replica's GPU measured it
        self.before_startup_s: float | None = 0.0
        self.before_kwh: float | None = 0.0

    def resume(self, startup_s: float | None, energy_kwh: float | None) -> None:
        """Continue from the totals a checkpoint carried."""
        self.before_startup_s, self.before_kwh = startup_s, energy_kwh

    def step_done(self) -> None:
        """Mark a completed step; the first one ends this attempt's start-up."""
        if self.attempt_startup_s is None:
            self.attempt_startup_s = self._clock() - self._born

    @property
    def startup_s(self) -> float | None:
        """Seconds all attempts so far spent starting (the earlier ones' before a first step)."""
        if self.attempt_startup_s is None:
            return self.before_startup_s
        return _add(self.before_startup_s, self.attempt_startup_s)

    @property
    def energy_kwh(self) -> float | None:
        """kWh the job's GPUs drew over all attempts; None unless every attempt measured it."""
        return _add(self.before_kwh, self.attempt_kwh)

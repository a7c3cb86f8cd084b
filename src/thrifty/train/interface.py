"""What the adaptive loader and the data-parallel wrapper need from the job, and nothing more.

The job creates the loader and the wrapper; they read a few of its values and report to it after
every optimizer step. Naming that narrow surface here, as Protocols, lets `data` and `parallel`
depend on this module instead of on `job` (which imports them), and keeps every value they touch
public: the job can change how it is built without the two noticing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from thrifty.goodput.model import BatchLimits
    from thrifty.goodput.noise import NoiseEstimator
    from thrifty.train.env import TrainEnv
    from thrifty.train.profile import StepProfile


@dataclass(frozen=True)
class StepOutcome:
    """What one completed optimizer step measured, handed to `JobHandle.after_step`."""

    local_bsz: int  # samples this replica trained on in the step's last micro-batch
    seconds: float  # since the previous step ended; 0 when the step was not timed
    sync_s: float  # of it, time in gradient all-reduces that computation did not hide
    progress: float  # statistical progress: the step's gain over one at the initial batch
    stop: bool  # whether any replica was asked to stop before the step's gradients were reduced


class BatchCursor(Protocol):
    """Where the loader stands inside the global batch it is yielding (read by the wrapper to
    tell an accumulation micro-step from the one that synchronises and steps)."""

    @property
    def in_batch(self) -> bool: ...

    @property
    def is_sync_micro(self) -> bool: ...

    @property
    def current_local(self) -> int: ...

    @property
    def current_batch_size(self) -> int: ...


class JobHandle(Protocol):
    """The job as the loader and the wrapper see it (`thrifty.train.job.Job` is one)."""

    @property
    def env(self) -> TrainEnv: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def epoch(self) -> int: ...

    @property
    def step(self) -> int: ...

    @property
    def stats_every(self) -> int: ...

    @property
    def limits(self) -> BatchLimits: ...

    @property
    def noise(self) -> NoiseEstimator: ...

    @property
    def profile(self) -> StepProfile: ...

    @property
    def batches(self) -> BatchCursor | None:
        """The adaptive loader, once created."""
        ...

    def stop_requested(self) -> bool: ...

    def after_step(self, outcome: StepOutcome) -> None:
        """Count the step, learn from it, adapt or stop (a collective where those are)."""
        ...

"""What the scheduler needs from whatever runs the replicas: this machine or a Ray cluster.

An executor is told to launch an attempt (a job on one allocation), later asked how it is doing,
and to stop it. Its `handle` for an attempt is plain JSON that the scheduler commits to the store
before acting, so a restarted control plane can find its running attempts again (`adopt`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from thrifty.cluster.spec import JobSpec
from thrifty.contract import EXIT_LOST, EXIT_RESIZE, Allocation
from thrifty.policy.base import NodeView

Handle = dict[str, Any]

LOST = EXIT_LOST


@dataclass(frozen=True)
class Launch:
    """One attempt to run: everything an executor needs, nothing it has to look up."""

    job_id: str
    attempt: int
    spec: JobSpec
    allocation: Allocation
    env: Mapping[str, str]  # THRIFTY_* for every replica (checkpoint folder, report target, ...)
    log_dir: Path  # replica r of this attempt logs to log_dir / f"attempt-{attempt}-rank-{r}.log"

    def log_path(self, rank: int) -> Path:
        return self.log_dir / f"attempt-{self.attempt}-rank-{rank}.log"


@dataclass(frozen=True)
class AttemptStatus:
    """Exit codes per rank (None while that rank runs); `note` explains a lost replica."""

    exit_codes: Sequence[int | None]
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return any(code is None for code in self.exit_codes)

    def outcome(self) -> str:
        """`succeeded`, `resize` (checkpointed on request, or lost: resume elsewhere), `failed`."""
        codes = [c for c in self.exit_codes if c is not None]
        if codes and all(c == 0 for c in codes) and not self.running:
            return "succeeded"
        if any(c not in (0, EXIT_RESIZE, LOST) for c in codes):
            return "failed"
        return "resize"


class Executor(Protocol):
    """Runs attempts. Implementations: `local` (processes here) and `ray`."""

    name: str

    def nodes(self) -> tuple[NodeView, ...]:
        """The nodes replicas can run on now (a lost node disappears from this list)."""
        ...

    def launch(self, launch: Launch) -> Handle:
        """Start every replica of the attempt; returns at once with a JSON-able handle."""
        ...

    def poll(self, handle: Handle) -> AttemptStatus: ...

    def stop(self, handles: Sequence[Handle], grace_s: float) -> None:
        """Ask the attempts to checkpoint and exit (SIGTERM); kill what is left after grace_s."""
        ...

    def adopt(self, handle: Handle) -> bool:
        """After a control-plane restart: True when the attempt still runs and is managed again."""
        ...

    def close(self) -> None: ...

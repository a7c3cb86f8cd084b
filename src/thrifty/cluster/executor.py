"""What the scheduler needs from whatever runs the replicas: this machine or a Ray cluster.

An executor is told to launch an attempt (a job on one allocation), later asked how it is doing,
and to stop it. Its `handle` for an attempt is a small frozen dataclass that the scheduler commits
to the store (as its `to_dict()` JSON) before acting, so a restarted control plane can find its
running attempts again (`adopt`). Executors accept a handle or its stored dict alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from thrifty.cluster.spec import JobSpec
from thrifty.contract import EXIT_LOST, EXIT_RESIZE, Allocation
from thrifty.errors import ThriftyError
from thrifty.policy.base import NodeView

LOST = EXIT_LOST


@dataclass(frozen=True)
class Handle:
    """What an executor needs to find one attempt again; subclasses add their own fields.

    Stored as JSON with an `executor` field naming its kind. `from_dict` also reads handles stored
    before that field existed (the dicts earlier versions wrote carry the same keys), so a store
    from before the upgrade adopts its running attempts as it did.
    """

    key: str  # "{job_id}/{attempt}"
    executor: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"executor": self.executor}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        given = data.get("executor") or cls.executor
        if given != cls.executor:
            raise ThriftyError(f"a handle of the {given} executor was given to the "
                               f"{cls.executor} executor; start the server with --executor {given}")
        known = {f.name: f for f in fields(cls)}
        missing = [name for name, f in known.items() if name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ThriftyError(f"a stored {cls.executor} handle lacks {', '.join(missing)}")
        return cls(**{name: tuple(value) if isinstance(value, list) else value
                      for name, value in data.items() if name in known})

    @classmethod
    def read(cls, handle: Handle | Mapping[str, Any] | None) -> Self | None:
        """`handle` as this executor's type; None for an attempt without one (a launch that
        failed, or one whose handle never reached the store)."""
        if isinstance(handle, cls):
            return handle
        if isinstance(handle, Handle):
            raise ThriftyError(f"a {handle.executor} handle was given to the {cls.executor} "
                               "executor")
        if not handle or "key" not in handle:
            return None
        return cls.from_dict(handle)


AnyHandle = Handle | Mapping[str, Any]  # a handle, or the dict the store gives back


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

    @classmethod
    def missing(cls) -> AttemptStatus:
        """An attempt with no handle on record: its replicas cannot be found, so they are lost."""
        return cls([LOST], "the attempt has no replicas on record")

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
    # True when replicas run on this machine and see its files (local), so that a job's
    # working_dir can be checked at submission; False when they run elsewhere (ray).
    shares_filesystem: bool

    def nodes(self) -> tuple[NodeView, ...]:
        """The nodes replicas can run on now (a lost node disappears from this list)."""
        ...

    def launch(self, launch: Launch) -> Handle:
        """Start every replica of the attempt; returns at once with its handle."""
        ...

    def poll(self, handle: AnyHandle) -> AttemptStatus: ...

    def stop(self, handles: Sequence[AnyHandle], grace_s: float) -> None:
        """Ask the attempts to checkpoint and exit (SIGTERM); kill what is left after grace_s."""
        ...

    def adopt(self, handle: AnyHandle) -> bool:
        """After a control-plane restart: True when the attempt still runs and is managed again."""
        ...

    def close(self) -> None: ...

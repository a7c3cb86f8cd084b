"""Atomic, verified checkpoints that survive a crash in the middle of writing one, and what a
job's checkpoint holds.

A checkpoint is written to a temporary file, flushed to disk (fsync), then renamed over its final
name, so a reader sees either the whole file or none of it. Each file starts with a SHA-256 of its
payload: a file damaged later (a full disk, a torn copy) is detected on load, and the previous
checkpoint, always kept, is used instead.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from thrifty.contract import Env
from thrifty.errors import ThriftyError

log = logging.getLogger(__name__)

_MAGIC = b"THRIFTY-CKPT-1\n"
_DIGEST = 64  # hex characters of a SHA-256
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


def check_writable(folder: Path) -> None:
    """Fail now, not after an hour of training, when checkpoints could not be saved."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ThriftyError(
            f"checkpoint folder {folder} cannot be created ({err.strerror}); "
            f"set checkpoint_dir (or {Env.CHECKPOINT_DIR}) to a writable folder"
        ) from None
    probe = folder / f".probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ThriftyError(
            f"checkpoint folder {folder} is not writable ({err.strerror}); "
            f"set checkpoint_dir (or {Env.CHECKPOINT_DIR}) to a writable folder"
        ) from None


class CheckpointStore:
    """Numbered checkpoints in one folder: the newest `keep` are kept, older ones removed."""

    def __init__(self, folder: str | os.PathLike[str], keep: int = 2) -> None:
        if keep < 2:
            raise ThriftyError("keep must be at least 2: the previous checkpoint is the fallback")
        self.folder = Path(folder)
        self.keep = keep

    def _numbered(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, state: dict[str, Any]) -> Path:
        """Write `state` as the next checkpoint and return its path."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        digest = hashlib.sha256(payload).hexdigest().encode()
        numbered = self._numbered()
        number = numbered[-1][0] + 1 if numbered else 0
        final = self.folder / f"ckpt-{number:09d}.pt"
        tmp = self.folder / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            handle.write(_MAGIC)
            handle.write(digest)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must reach the disk
        finally:
            os.close(dir_fd)
        for _, old in self._numbered()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """Load one checkpoint file, raising ThriftyError when it is damaged."""
        data = path.read_bytes()
        head = len(_MAGIC) + _DIGEST
        if len(data) < head or not data.startswith(_MAGIC):
            raise ThriftyError(f"{path} is not a thrifty checkpoint (bad header)")
        digest = data[len(_MAGIC) : head].decode(errors="replace")
        payload = data[head:]
        if hashlib.sha256(payload).hexdigest() != digest:
            raise ThriftyError(f"{path} is damaged: its checksum does not match")
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies; damaged newer ones are skipped with a warning."""
        for _, path in reversed(self._numbered()):
            try:
                return path, self.read(path)
            except (ThriftyError, OSError, RuntimeError, EOFError) as err:
                log.warning("skipping checkpoint %s: %s; trying the one before it", path, err)
        return None


@dataclass(frozen=True)
class JobState:
    """Everything a job saves to resume exactly, by name (format version 1).

    `rng` holds every replica's generator states by rank; `user` the state of each object the
    script registered. `model`, `loader`, `noise` and `profile` are None when the job had no
    wrapped model (no loader) when it saved. `startup_s` and `energy_kwh` are the totals over
    all attempts so far, `metrics` the last ones the script reported.
    """

    epoch: int
    step: int
    progress: float
    world_size: int
    startup_s: float | None = None
    energy_kwh: float | None = None
    rng: list[dict[str, Any]] = field(default_factory=list)
    user: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    loader: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    VERSION = 1

    def to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": self.VERSION,
            "epoch": self.epoch,
            "step": self.step,
            "progress": self.progress,
            "world_size": self.world_size,
            "startup_s": self.startup_s,
            "energy_kwh": self.energy_kwh,
            "rng": self.rng,
            "user": self.user,
            "metrics": dict(self.metrics),
        }
        for name in ("model", "loader", "noise", "profile"):
            value = getattr(self, name)
            if value is not None:
                state[name] = value
        return state

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> JobState:
        """A loaded checkpoint; files from before a field existed read as without it."""
        return cls(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            progress=float(state["progress"]),
            world_size=int(state["world_size"]),
            startup_s=state.get("startup_s"),
            energy_kwh=state.get("energy_kwh"),
            rng=list(state.get("rng", [])),
            user=dict(state.get("user", {})),
            model=state.get("model"),
            loader=state.get("loader"),
            noise=state.get("noise"),
            profile=state.get("profile"),
            metrics={str(k): float(v) for k, v in state.get("metrics", {}).items()},
        )

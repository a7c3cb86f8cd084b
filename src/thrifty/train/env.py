"""Where a training process stands: its rank, its allocation and where to save and report.

Launchers describe a process in environment variables: torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK and LOCAL_WORLD_SIZE; thrifty's executors add THRIFTY_* variables for the checkpoint
folder, the report target, the GPU kind and, where nodes run different numbers of replicas (an
allocation of {a: 2, b: 1}), the number of nodes, which torchrun's variables cannot express.
Reading them in one place, and checking them before anything starts, means a misconfigured job
fails in its first second with a message that says which variable is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from thrifty.errors import ThriftyError


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ThriftyError(
            f"environment variable {name}={raw!r} is not an integer; unset it or set a number"
        ) from None


@dataclass(frozen=True)
class TrainEnv:
    """The allocation and destinations of one training process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    checkpoint_dir: Path | None = None
    report_to: str | None = None
    gpu_kind: str = "cpu"
    job_id: str = "job"
    restarts: int = 0
    nodes: int | None = None  # THRIFTY_NUM_NODES; None: WORLD_SIZE / LOCAL_WORLD_SIZE

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ThriftyError(f"WORLD_SIZE must be at least 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ThriftyError(
                f"RANK={self.rank} lies outside 0..{self.world_size - 1} (WORLD_SIZE); "
                "check the launcher's settings"
            )
        if self.nodes is not None:
            if not 1 <= self.nodes <= self.world_size:
                raise ThriftyError(
                    f"THRIFTY_NUM_NODES={self.nodes} lies outside 1..{self.world_size} "
                    "(WORLD_SIZE); check the launcher's settings"
                )
        elif self.local_world_size < 1 or self.world_size % self.local_world_size:
            raise ThriftyError(
                f"LOCAL_WORLD_SIZE={self.local_world_size} does not divide "
                f"WORLD_SIZE={self.world_size}: with unequal replicas per node, set "
                "THRIFTY_NUM_NODES to the number of nodes"
            )

    @property
    def num_nodes(self) -> int:
        if self.nodes is not None:
            return self.nodes
        return self.world_size // self.local_world_size

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        report_to: str | None = None,
    ) -> TrainEnv:
        """Read the process's environment; explicit arguments win over THRIFTY_* variables."""
        env = os.environ if environ is None else environ
        world = _int(env, "WORLD_SIZE", 1)
        ckpt = checkpoint_dir if checkpoint_dir is not None else env.get("THRIFTY_CHECKPOINT_DIR")
        return cls(
            rank=_int(env, "RANK", 0),
            world_size=world,
            local_rank=_int(env, "LOCAL_RANK", 0),
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", world),
            checkpoint_dir=Path(ckpt) if ckpt else None,
            report_to=report_to if report_to is not None else env.get("THRIFTY_REPORT") or None,
            gpu_kind=env.get("THRIFTY_GPU_KIND", "") or "cpu",
            job_id=env.get("THRIFTY_JOB_ID", "") or "job",
            restarts=_int(env, "TORCHELASTIC_RESTART_COUNT", 0),
            nodes=_int(env, "THRIFTY_NUM_NODES", 0) or None,
        )

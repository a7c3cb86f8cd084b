"""Where a training process stands: its rank, its allocation and where to save and report.

Launchers describe a process in environment variables: torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK and LOCAL_WORLD_SIZE; thrifty's executors add the checkpoint folder, the report
target, the job's name and the attempt's `Allocation` as one JSON value (`Env.ALLOCATION`),
which names the GPU kind and the nodes. Where nodes run different numbers of replicas (an
allocation of {a: 2, b: 1}) only the allocation tells the number of nodes: torchrun's variables
cannot express it. Reading them in one place, and checking them before anything starts, means a
misconfigured job fails in its first second with a message that says which variable is wrong.

This module imports no torch, so a launcher can check an environment cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from thrifty.contract import Allocation, Env
from thrifty.errors import ThriftyError

_NO_ALLOCATION_KIND = "cpu"  # plain torchrun: `thrifty.train.init` says "cuda" on a GPU


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


def _allocation(environ: Mapping[str, str]) -> Allocation | None:
    raw = environ.get(Env.ALLOCATION)
    if not raw:
        return None
    try:
        return Allocation.from_json(raw)
    except ThriftyError as err:
        raise ThriftyError(
            f"environment variable {Env.ALLOCATION} is not an allocation ({err}); set it to "
            "Allocation.to_json() of the attempt's allocation, or unset it"
        ) from None


@dataclass(frozen=True)
class TrainEnv:
    """The allocation and destinations of one training process.

    `allocation` is what the executor granted this attempt, None under a plain launcher; the
    number of nodes is then WORLD_SIZE / LOCAL_WORLD_SIZE.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    checkpoint_dir: Path | None = None
    report_to: str | None = None
    gpu_kind: str = _NO_ALLOCATION_KIND
    job_id: str = "job"
    restarts: int = 0
    allocation: Allocation | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ThriftyError(f"WORLD_SIZE must be at least 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ThriftyError(
                f"RANK={self.rank} lies outside 0..{self.world_size - 1} (WORLD_SIZE); "
                "check the launcher's settings"
            )
        if self.allocation is not None:
            nodes = self.allocation.num_nodes
            if not 1 <= nodes <= self.world_size:
                raise ThriftyError(
                    f"{Env.ALLOCATION} grants {nodes} nodes, outside 1..{self.world_size} "
                    "(WORLD_SIZE): every node runs at least one replica; check the launcher's "
                    "settings"
                )
        elif self.local_world_size < 1 or self.world_size % self.local_world_size:
            raise ThriftyError(
                f"LOCAL_WORLD_SIZE={self.local_world_size} does not divide "
                f"WORLD_SIZE={self.world_size}: with unequal replicas per node, set "
                f"{Env.ALLOCATION} to the attempt's allocation"
            )

    @property
    def num_nodes(self) -> int:
        if self.allocation is not None:
            return self.allocation.num_nodes
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
        """Read the process's environment; explicit arguments win over the executor's values."""
        env = os.environ if environ is None else environ
        world = _int(env, "WORLD_SIZE", 1)
        ckpt = checkpoint_dir if checkpoint_dir is not None else env.get(Env.CHECKPOINT_DIR)
        allocation = _allocation(env)
        return cls(
            rank=_int(env, "RANK", 0),
            world_size=world,
            local_rank=_int(env, "LOCAL_RANK", 0),
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", world),
            checkpoint_dir=Path(ckpt) if ckpt else None,
            report_to=report_to if report_to is not None else env.get(Env.REPORT) or None,
            gpu_kind=allocation.kind if allocation is not None else _NO_ALLOCATION_KIND,
            job_id=env.get(Env.JOB_ID, "") or "job",
            restarts=_int(env, "TORCHELASTIC_RESTART_COUNT", 0),
            allocation=allocation,
        )

"""The random generators' state, saved with a checkpoint so that a resumed replica draws on.

Dropout masks, data augmentation and anything else a training script randomises come from
PyTorch's, NumPy's and Python's generators (and CUDA's, per device). A resumed run at the same
world size is bit-identical to an uninterrupted one only if each replica picks up the exact
state it had; at another world size the replicas' streams differ from before anyway, and each is
seeded from the job's seed, its rank and the step instead, so that the run stays reproducible.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def capture() -> dict[str, Any]:
    """This process's generator states."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather(distributed: bool, world_size: int) -> list[dict[str, Any]]:
    """Every replica's states, by rank (collective when `distributed`)."""
    mine = capture()
    if not distributed:
        return [mine]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def restore(state: dict[str, Any]) -> None:
    """Put back what `capture` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reseed(seed: int, rank: int, step: int) -> None:
    """Seed every generator from the job's seed, this replica's rank and the step reached."""
    value = (seed * 7919 + rank * 104_729 + step) % 2**31
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def resume(states: list[dict[str, Any]], same_world: bool, rank: int, seed: int, step: int) -> None:
    """Continue this replica's streams from a checkpoint's `states` (by rank) at the same world
    size; at another, reseed them (the replicas differ from before anyway)."""
    if same_world and rank < len(states):
        restore(states[rank])
    else:
        reseed(seed, rank, step)

"""Choosing the batch configuration: what the job has learned, and whether to switch.

Every `adapt_every` steps rank 0 fits the throughput model to the steps measured so far, combines
it with the gradient-noise estimate into a GoodputModel, and asks it for the best per-replica
micro-batch and accumulation on the current placement. It switches only for a predicted goodput
gain of at least `min_gain` (a change costs warm-up steps and makes the model's measurements of
the old configuration stale), and every replica adopts what rank 0 broadcasts, so that all of
them split the next global batch alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist

from thrifty.goodput.efficiency import GradientStats
from thrifty.goodput.model import BatchLimits, GoodputModel, split_batch
from thrifty.goodput.noise import NoiseEstimator
from thrifty.train.env import TrainEnv
from thrifty.train.profile import StepProfile


def split(limits: BatchLimits, world_size: int, total: int, cap: int) -> tuple[int, int]:
    """Per-replica micro-batch and accumulation for a total batch of `total` (brought within
    the limits) over `world_size` replicas, no micro-batch above `cap`."""
    total = min(max(total, limits.init_batch_size), limits.max_batch_size)
    atomic, accum = split_batch(total, world_size, limits.init_batch_size, cap)
    return max(int(atomic), limits.min_local_bsz), int(accum)


def learned_model(
    profile: StepProfile,
    noise: NoiseEstimator,
    limits: BatchLimits,
    kind: str,
    world_size: int,
    local_caps: Mapping[str, int],
    progress: float,
    target_progress: float | None,
) -> GoodputModel | None:
    """The GoodputModel of what was measured so far (None before any step was timed)."""
    params = profile.params_ or profile.fit()
    if params is None:
        return None
    stats = noise.stats() or GradientStats(sqr=1.0, var=0.0)
    explored = max(profile.max_replicas(), world_size)
    return GoodputModel(
        throughput={kind: params},
        grad=stats,
        limits=limits,
        explored={kind: explored},
        local_caps=dict(local_caps),
        progress=progress,
        target_progress=target_progress,
    )


def better_config(
    model: GoodputModel, kind: str, env: TrainEnv, current: tuple[int, int], min_gain: float
) -> tuple[int, int]:
    """(micro-batch, accumulation) to train at next: the best one where it beats `current` by
    `min_gain`, else `current`."""
    nodes, replicas = env.num_nodes, env.world_size
    best, atomic, accum = model.best(kind, nodes, replicas)
    now = model.goodput(kind, nodes, replicas, *current)
    if float(best) >= (1 + min_gain) * float(now) and int(atomic) > 0:
        return int(atomic), int(accum)
    return current


def agree(choice: tuple[int, int], env: TrainEnv, device: torch.device) -> tuple[int, int]:
    """Rank 0's choice, on every replica (collective when distributed)."""
    if not env.distributed:
        return choice
    packed = torch.tensor(choice, dtype=torch.int64).to(device)
    dist.broadcast(packed, src=0)
    return int(packed[0]), int(packed[1])

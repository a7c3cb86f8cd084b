"""Starting a replica (`init`): its threads, generators and device, and its process group.

Everything local is checked before anything touches the network, so that a bad folder or a
contradicting environment fails in a second rather than after a rendezvous timeout. A process
group the launcher created (Ray Train creates one before the training function runs) must match
RANK and WORLD_SIZE and stays the launcher's to destroy; otherwise `join_group` creates one.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from thrifty.errors import ThriftyError
from thrifty.train import memory
from thrifty.train.env import TrainEnv
from thrifty.train.job import Job


def prepare_process(
    env: TrainEnv,
    *,
    seed: int,
    num_threads: int | None,
    deterministic: bool,
    keep_freed_memory: bool,
) -> tuple[TrainEnv, torch.device]:
    """Set up this process for training; returns the environment (with the GPU kind a plain
    launcher left unnamed: "cuda" on a GPU) and the device this replica trains on."""
    if keep_freed_memory:
        memory.keep_freed_memory()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    if not torch.cuda.is_available():
        return env, torch.device("cpu")
    device = torch.device("cuda", env.local_rank)
    torch.cuda.set_device(device)
    if env.allocation is None:
        env = dataclasses.replace(env, gpu_kind="cuda")
    return env, device


def check_group(env: TrainEnv) -> None:
    """A group the launcher created must be the one RANK and WORLD_SIZE describe: replicas that
    disagree on their number would split batches wrongly and wait forever in collectives."""
    size, rank = dist.get_world_size(), dist.get_rank()
    if (size, rank) != (env.world_size, env.rank):
        raise ThriftyError(
            f"the torch process group has rank {rank} of {size}, but RANK={env.rank} and "
            f"WORLD_SIZE={env.world_size}: set RANK and WORLD_SIZE to the group's (torchrun "
            "and Ray Train do) or let thrifty.train.init create the group"
        )


def join_group(env: TrainEnv, device: torch.device, backend: str | None, timeout_s: float) -> bool:
    """Create the process group where the job is distributed and none exists; returns whether
    this process created it (and so must destroy it)."""
    if not env.distributed or dist.is_initialized():
        return False
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ThriftyError(
                f"{name} is not set but WORLD_SIZE={env.world_size}: launch with torchrun "
                "or set MASTER_ADDR and MASTER_PORT"
            )
    chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
    if chosen == "gloo" and os.environ.get("MASTER_ADDR", "").startswith("127."):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        chosen,
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return True


def init(
    checkpoint_dir: str | os.PathLike[str] | None = None,
    report_to: str | None = None,
    *,
    adapt_every: int = 25,
    min_gain: float = 0.05,
    report_interval_s: float = 5.0,
    seed: int = 0,
    stats_every: int = 4,
    num_threads: int | None = 1,
    deterministic: bool = False,
    backend: str | None = None,
    timeout_s: float = 300.0,
    keep_freed_memory: bool = True,
) -> Job:
    """Start this replica: read the allocation, join the process group, find the checkpoint.

    Explicit arguments win over the executor's checkpoint folder and report target
    (`Env.CHECKPOINT_DIR`, `Env.REPORT`). `num_threads` caps PyTorch's intra-op threads (several
    replicas on one host otherwise oversubscribe the cores). Gradient noise is measured every
    `stats_every` steps: it changes slowly, and measuring costs two passes over the gradients.
    PyTorch's generator is seeded with `seed`, so that every replica builds the same initial
    model; `deterministic` also asks PyTorch for deterministic kernels, which makes a resumed run
    bit-identical to an uninterrupted one at the same world size. `keep_freed_memory` keeps glibc
    from returning freed activation buffers to the kernel after every step (see
    `thrifty.train.memory`): faster and steadier CPU steps, at peak memory.
    """
    env = TrainEnv.from_environ(checkpoint_dir=checkpoint_dir, report_to=report_to)
    env, device = prepare_process(
        env, seed=seed, num_threads=num_threads, deterministic=deterministic,
        keep_freed_memory=keep_freed_memory,
    )
    # Check everything local before touching the network: a bad folder fails in a second.
    if dist.is_initialized():
        check_group(env)
    job = Job(env, device, adapt_every, min_gain, report_interval_s, seed, stats_every)
    job.owns_group = join_group(env, device, backend, timeout_s)
    return job

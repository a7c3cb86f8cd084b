"""The training job as one object: allocation, checkpoints, adaptation, reporting, stopping.

`init()` creates it. The loader and the data-parallel wrapper report to it after every optimizer
step; it decides every `adapt_every` steps whether another batch size / accumulation is worth
switching to (only for a predicted goodput gain of at least `min_gain`), publishes the
GoodputModel, and turns a stop request into a checkpoint and the resize exit code.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from thrifty.errors import ThriftyError
from thrifty.goodput.efficiency import GradientStats
from thrifty.goodput.model import BatchLimits, GoodputModel, split_batch
from thrifty.goodput.noise import NoiseEstimator
from thrifty.train import memory
from thrifty.train.checkpoint import CheckpointStore, check_writable
from thrifty.train.data import AdaptiveDataLoader
from thrifty.train.energy import EnergyMeter
from thrifty.train.env import TrainEnv
from thrifty.train.parallel import AdaptiveDataParallel
from thrifty.train.profile import StepProfile
from thrifty.train.report import Reporter
from thrifty.train.scaling import ScalingRule
from thrifty.train.signals import EXIT_RESIZE, StopSignal

log = logging.getLogger(__name__)

_CAPS_FILE = "local_caps.json"  # per-replica batch limits learned from out-of-memory errors


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU or host allocation failure (CUDA's error type, or the CPU allocator's message)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class Job:
    """One replica's view of the training job. Create with `thrifty.train.init()`."""

    def __init__(
        self,
        env: TrainEnv,
        device: torch.device,
        adapt_every: int = 25,
        min_gain: float = 0.05,
        report_interval: float = 5.0,
        seed: int = 0,
        stats_every: int = 4,
    ) -> None:
        if stats_every < 1:
            raise ThriftyError(f"stats_every must be at least 1 step, got {stats_every}")
        if adapt_every < 1:
            raise ThriftyError(f"adapt_every must be at least 1 step, got {adapt_every}")
        if min_gain < 0:
            raise ThriftyError(f"min_gain must be non-negative, got {min_gain}")
        self.env = env
        self.device = device
        self.adapt_every = adapt_every
        self.min_gain = min_gain
        self.seed = seed
        self.stats_every = stats_every
        self.epoch = 0
        self.step = 0
        self.progress = 0.0
        self.target_progress: float | None = None
        self.limits = BatchLimits(1, 1)
        self.noise = NoiseEstimator(1)
        self.profile = StepProfile()
        self.loader_: AdaptiveDataLoader | None = None
        self.model_: AdaptiveDataParallel | None = None
        self.local_caps: dict[str, int] = {}
        self.adoptions: list[tuple[int, int, int]] = []  # (step, micro-batch, accumulation)
        self._user: dict[str, Any] = {}
        self._rng_pending = False
        self.store = CheckpointStore(env.checkpoint_dir) if env.checkpoint_dir else None
        self.restored: dict[str, Any] | None = None
        self.restored_from: Path | None = None
        # Restart overhead and measured energy, summed over every attempt of the job: each
        # attempt adds its own to what the checkpoint it resumed from carried.
        self._born = time.monotonic()
        self._startup_s: float | None = None  # this attempt's: start to the first step's end
        self.meter = EnergyMeter(device)
        self._attempt_kwh: float | None = None
        self._before = {"startup_s": 0.0, "energy_kwh": 0.0}
        if env.checkpoint_dir is not None:
            check_writable(env.checkpoint_dir)
            self.local_caps = self._read_caps()
        if self.store is not None:
            latest = self.store.latest()
            if latest is not None:
                self.restored_from, self.restored = latest
                self.epoch = int(self.restored["epoch"])
                self.step = int(self.restored["step"])
                self.progress = float(self.restored["progress"])
                self._rng_pending = True
                self._before = {k: self.restored.get(k) for k in self._before}
                log.info("resuming from %s (epoch %d, step %d)", latest[0], self.epoch, self.step)
        self.stop = StopSignal()
        self.reporter = (
            Reporter(env.report_to, report_interval) if env.report_to and env.rank == 0 else None
        )
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        self._closed = False
        self.owns_group = False  # a launcher's group (Ray Train's) is the launcher's to destroy

    # ---- building blocks ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.env.gpu_kind

    @property
    def same_world(self) -> bool:
        return self.restored is not None and int(self.restored["world_size"]) == self.env.world_size

    def loader(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        max_batch_size: int | None = None,
        local_bsz_bounds: tuple[int, int | None] = (1, None),
        shuffle: bool = True,
        seed: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> AdaptiveDataLoader:
        """The adaptive training loader; `batch_size` is the initial total batch over replicas.

        The total batch may grow up to `max_batch_size` (default: stay at `batch_size`); each
        replica's micro-batch stays within `local_bsz_bounds`, accumulating gradients when a
        replica's share would exceed the upper bound.
        """
        if self.loader_ is not None:
            raise ThriftyError("this job already has an adaptive loader: create only one")
        low, high = local_bsz_bounds
        length = len(dataset)  # type: ignore[arg-type]
        world = self.env.world_size
        if length < world * max(low, 1):
            raise ThriftyError(
                f"the dataset has {length} samples, too few for {world} replicas with at least "
                f"{low} each (local_bsz_bounds); use fewer replicas or a larger dataset"
            )
        self.limits = BatchLimits(
            init_batch_size=batch_size,
            max_batch_size=batch_size if max_batch_size is None else max_batch_size,
            min_local_bsz=low,
            max_local_bsz=high,
        )
        self.noise = NoiseEstimator(batch_size)
        total = batch_size
        if self.restored is not None:
            total = int(self.restored["loader"]["batch_size"])
        atomic, accum = self._split(total)
        if world * atomic * (accum + 1) > length:
            raise ThriftyError(
                f"the dataset has {length} samples, fewer than one batch of "
                f"{world * atomic * (accum + 1)} over {world} replicas; lower batch_size "
                "or use fewer replicas"
            )
        loader = AdaptiveDataLoader(
            self, dataset, atomic, accum, shuffle=shuffle,
            seed=self.seed if seed is None else seed, collate_fn=collate_fn,
        )
        if self.restored is not None:
            loader.sampler.load_state_dict(self.restored["loader"]["sampler"])
            self.noise.load_state_dict(self.restored["noise"])
            self.profile.load_state_dict(self.restored["profile"])
        self.loader_ = loader
        return loader

    def _split(self, total: int) -> tuple[int, int]:
        """Per-replica micro-batch and accumulation for `total`, within the limits."""
        lim = self.limits
        cap = self.local_caps.get(self.kind, lim.local_cap)
        total = min(max(total, lim.init_batch_size), lim.max_batch_size)
        atomic, accum = split_batch(total, self.env.world_size, lim.init_batch_size, cap)
        return max(int(atomic), lim.min_local_bsz), int(accum)

    def parallel(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        scaling: str | ScalingRule = "auto",
        grad_scaler: Any = None,
        **ddp_kwargs: Any,
    ) -> AdaptiveDataParallel:
        """Wrap `model` for adaptive data parallelism; restores its state when resuming."""
        if self.model_ is not None:
            raise ThriftyError("this job already wraps a model: call parallel() once")
        wrapped = AdaptiveDataParallel(
            self, model, optimizer, lr_scheduler, scaling, grad_scaler, **ddp_kwargs
        )
        if self.restored is not None:
            wrapped.load_checkpoint(self.restored["model"], self.same_world)
        self.model_ = wrapped
        return wrapped

    def register(self, name: str, obj: Any) -> None:
        """Checkpoint `obj` (anything with state_dict/load_state_dict) with the job."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise ThriftyError(f"cannot checkpoint {name!r}: it lacks state_dict/load_state_dict")
        self._user[name] = obj
        if self.restored is not None and name in self.restored.get("user", {}):
            obj.load_state_dict(self.restored["user"][name])

    # ---- epochs ------------------------------------------------------------------------------

    def epochs(self, count: int, checkpoint: bool = True) -> Iterator[int]:
        """The epochs still to run until `count`, continuing after a restart.

        Declares the job's length to the scheduler (`target_progress`) and checkpoints after
        each epoch when a checkpoint folder is set.
        """
        if count < 1:
            raise ThriftyError(f"the number of epochs must be at least 1, got {count}")
        if self.loader_ is None:
            raise ThriftyError("create the loader (job.loader(...)) before iterating epochs")
        self.target_progress = count * self.loader_.length / self.limits.init_batch_size
        self._restore_rng()
        while self.epoch < count:
            if self.model_ is not None:
                self.model_.restart_clock()
            yield self.epoch
            self.epoch += 1
            self.loader_.end_epoch()
            if checkpoint and self.store is not None:
                self.checkpoint()
        self._publish()

    def _restore_rng(self) -> None:
        if not self._rng_pending or self.restored is None:
            return
        self._rng_pending = False
        states = self.restored.get("rng", [])
        if self.same_world and self.env.rank < len(states):
            _set_rng_state(states[self.env.rank])
        else:
            # Another world size: replicas differ from before anyway; stay reproducible.
            seed = (self.seed * 7919 + self.env.rank * 104_729 + self.step) % 2**31
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

    # ---- after every optimizer step ----------------------------------------------------------

    def stop_requested(self) -> bool:
        return self.stop.requested is not None

    def _after_step(
        self, local_bsz: int, seconds: float, sync: float, progress: float, stop: bool
    ) -> None:
        self.step += 1
        self.progress += progress
        if self._startup_s is None:
            self._startup_s = time.monotonic() - self._born
        self.profile.record(self.env.num_nodes, self.env.world_size, local_bsz, seconds, sync)
        if self.step % self.adapt_every == 0:
            self._adapt()
        if stop:
            self._stop_and_exit()

    def goodput_model(self) -> GoodputModel | None:
        """What the job has learned about itself so far (None before any step was measured)."""
        params = self.profile.params_ or self.profile.fit()
        if params is None:
            return None
        stats = self.noise.stats() or GradientStats(sqr=1.0, var=0.0)
        explored = max(self.profile.max_replicas(), self.env.world_size)
        return GoodputModel(
            throughput={self.kind: params},
            grad=stats,
            limits=self.limits,
            explored={self.kind: explored},
            local_caps=dict(self.local_caps),
            progress=self.progress,
            target_progress=self.target_progress,
        )

    # ---- restart overhead and energy ---------------------------------------------------------

    @property
    def startup_s(self) -> float | None:
        """Seconds all attempts so far spent starting (building, restoring, the first step)."""
        before = self._before["startup_s"]
        if before is None or self._startup_s is None:
            return before
        return before + self._startup_s

    @property
    def energy_kwh(self) -> float | None:
        """kWh the job's GPUs drew over all attempts; None unless every attempt measured it."""
        before = self._before["energy_kwh"]
        if before is None or self._attempt_kwh is None:
            return None
        return before + self._attempt_kwh

    def _measure_energy(self) -> None:
        """Sum the replicas' meters (collective: every replica calls it at the same step)."""
        if self.device.type != "cuda":  # the same answer on every replica: no collective
            return
        mine = self.meter.kwh()
        value = torch.tensor([math.nan if mine is None else mine], dtype=torch.float64,
                             device=self.device)
        if self.env.distributed:
            dist.all_reduce(value)
        total = float(value.item())
        self._attempt_kwh = None if math.isnan(total) else total

    def _adapt(self) -> None:
        """Rank 0 picks the configuration; everyone adopts what it broadcasts."""
        loader = self.loader_
        if loader is None:
            return
        self._measure_energy()
        choice = torch.tensor([loader.atomic_bsz, loader.accum_steps], dtype=torch.int64)
        if self.env.rank == 0:
            self.profile.fit()
            model = self.goodput_model()
            if model is not None and self.noise.stats() is not None:
                nodes, replicas = self.env.num_nodes, self.env.world_size
                best, atomic, accum = model.best(self.kind, nodes, replicas)
                current = model.goodput(
                    self.kind, nodes, replicas, loader.atomic_bsz, loader.accum_steps
                )
                if float(best) >= (1 + self.min_gain) * float(current) and int(atomic) > 0:
                    choice = torch.tensor([int(atomic), int(accum)], dtype=torch.int64)
            self._publish(model)
        if self.env.distributed:
            choice = choice.to(self.device)
            dist.broadcast(choice, src=0)
        atomic, accum = int(choice[0]), int(choice[1])
        if (atomic, accum) != (loader.atomic_bsz, loader.accum_steps):
            log.info("batch: %d per replica × %d micro-steps", atomic, accum + 1)
            loader.set_config(atomic, accum)
            self.adoptions.append((self.step, atomic, accum))

    def _publish(self, model: GoodputModel | None = None) -> None:
        if self.reporter is None:
            return
        model = model or self.goodput_model()
        if model is None:
            return
        report = {
            "job_id": self.env.job_id,
            "step": self.step,
            "epoch": self.epoch,
            "batch_size": self.loader_.batch_size if self.loader_ else None,
            "model": model.to_dict(),
            "startup_s": self.startup_s,
            "energy_kwh": self.energy_kwh,
        }
        self.reporter.publish(report)

    # ---- checkpoints and stopping ------------------------------------------------------------

    def checkpoint(self) -> Path | None:
        """Save everything needed to resume exactly (collective: every replica must call it)."""
        if self.store is None:
            return None
        if self.model_ is not None and self.model_.drain():
            self.stop.requested = self.stop.requested or signal.SIGTERM
        self._measure_energy()
        rng = _rng_state()
        if self.env.distributed:
            gathered: list[Any] = [None] * self.env.world_size
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        path = None
        if self.env.rank == 0:
            state: dict[str, Any] = {
                "version": 1,
                "epoch": self.epoch,
                "step": self.step,
                "progress": self.progress,
                "world_size": self.env.world_size,
                "startup_s": self.startup_s,
                "energy_kwh": self.energy_kwh,
                "rng": gathered,
                "user": {name: obj.state_dict() for name, obj in self._user.items()},
            }
            if self.model_ is not None:
                state["model"] = self.model_.state_dict_for_checkpoint()
            if self.loader_ is not None:
                state["loader"] = self.loader_.state_dict()
                state["noise"] = self.noise.state_dict()
                state["profile"] = self.profile.state_dict()
            path = self.store.save(state)
        if self.env.distributed:
            dist.barrier()
        return path

    def _stop_and_exit(self) -> None:
        log.warning("stop requested: checkpointing at step %d and exiting", self.step)
        self.checkpoint()
        self.finish()
        sys.exit(EXIT_RESIZE)

    def _read_caps(self) -> dict[str, int]:
        path = self.env.checkpoint_dir / _CAPS_FILE  # type: ignore[operator]
        try:
            return {k: int(v) for k, v in json.loads(path.read_text()).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable %s: %s", path, err)
            return {}

    def record_out_of_memory(self) -> int | None:
        """Lower this GPU kind's per-replica cap below the micro-batch that failed; the next
        start (from the last checkpoint) keeps the total batch by accumulating more."""
        loader = self.loader_
        if loader is None or self.env.checkpoint_dir is None:
            return None
        failed = max(loader.current_local, loader.atomic_bsz)
        cap = max(self.limits.min_local_bsz, (failed * 3) // 4)
        caps = self._read_caps()
        caps[self.kind] = min(cap, caps.get(self.kind, cap))
        path = self.env.checkpoint_dir / _CAPS_FILE
        tmp = path.with_name(f".{_CAPS_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(caps))
        os.replace(tmp, path)
        return caps[self.kind]

    def _excepthook(
        self, kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        if is_out_of_memory(error):
            cap = self.record_out_of_memory()
            if cap is not None:
                print(
                    f"thrifty: out of memory at {self.loader_.current_local} samples per replica; "
                    f"per-replica limit lowered to {cap}, restart to continue from the last "
                    "checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_RESIZE)  # the process group may be wedged: do not wait on it
        self._previous_hook(kind, error, trace)

    def finish(self) -> None:
        """Flush the last report and leave the process group cleanly (barrier first).

        A group that `init` found already created (Ray Train creates it before the training
        function runs, and destroys it after) is left to its creator.
        """
        if self._closed:
            return
        self._closed = True
        if self.model_ is not None:
            self.model_.drain()
        if not self.env.distributed or dist.is_initialized():
            self._measure_energy()
        if self.reporter is not None:
            self._publish()
            self.reporter.close()
        self.stop.close()
        sys.excepthook = self._previous_hook
        if self.env.distributed and dist.is_initialized():
            dist.barrier()
            if self.owns_group:
                dist.destroy_process_group()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None or kind is SystemExit:
            self.finish()


def init(
    checkpoint_dir: str | os.PathLike[str] | None = None,
    report_to: str | None = None,
    *,
    adapt_every: int = 25,
    min_gain: float = 0.05,
    report_interval: float = 5.0,
    seed: int = 0,
    stats_every: int = 4,
    num_threads: int | None = 1,
    deterministic: bool = False,
    backend: str | None = None,
    timeout_s: float = 300.0,
    keep_freed_memory: bool = True,
) -> Job:
    """Start this replica: read the allocation, join the process group, find the checkpoint.

    Explicit arguments win over THRIFTY_CHECKPOINT_DIR and THRIFTY_REPORT. `num_threads` caps
    PyTorch's intra-op threads (several replicas on one host otherwise oversubscribe the cores).
    Gradient noise is measured every `stats_every` steps: it changes slowly, and measuring costs
    two passes over the gradients. PyTorch's generator is seeded with `seed`, so that every replica
    builds the same initial model; `deterministic` also asks PyTorch for deterministic kernels,
    which makes a resumed run bit-identical to an uninterrupted one at the same world size.
    `keep_freed_memory` keeps glibc from returning freed activation buffers to the kernel after
    every step (see `thrifty.train.memory`): faster and steadier CPU steps, at peak memory.
    """
    env = TrainEnv.from_environ(checkpoint_dir=checkpoint_dir, report_to=report_to)
    if keep_freed_memory:
        memory.keep_freed_memory()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", env.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if env.gpu_kind == "cpu" and cuda and "THRIFTY_GPU_KIND" not in os.environ:
        env = TrainEnv(**{**env.__dict__, "gpu_kind": "cuda"})
    # Check everything local before touching the network: a bad folder fails in a second.
    if dist.is_initialized():
        _check_group(env)
    job = Job(env, device, adapt_every, min_gain, report_interval, seed, stats_every)
    if env.distributed and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ThriftyError(
                    f"{name} is not set but WORLD_SIZE={env.world_size}: launch with torchrun "
                    "or set MASTER_ADDR and MASTER_PORT"
                )
        chosen = backend or ("nccl" if cuda else "gloo")
        if chosen == "gloo" and os.environ.get("MASTER_ADDR", "").startswith("127."):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            chosen,
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        job.owns_group = True
    return job


def _check_group(env: TrainEnv) -> None:
    """A group the launcher created must be the one RANK and WORLD_SIZE describe: replicas that
    disagree on their number would split batches wrongly and wait forever in collectives."""
    size, rank = dist.get_world_size(), dist.get_rank()
    if (size, rank) != (env.world_size, env.rank):
        raise ThriftyError(
            f"the torch process group has rank {rank} of {size}, but RANK={env.rank} and "
            f"WORLD_SIZE={env.world_size}: set RANK and WORLD_SIZE to the group's (torchrun "
            "and Ray Train do) or let thrifty.train.init create the group"
        )

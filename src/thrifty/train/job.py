"""The training job as one object: allocation, checkpoints, adaptation, reporting, stopping.

`thrifty.train.init()` (in `bootstrap`) creates it. The loader and the data-parallel wrapper
report to it after every optimizer step; it decides every `adapt_every` steps whether another
batch size / accumulation is worth switching to (only for a predicted goodput gain of at least
`min_gain`), publishes its `JobReport`, and turns a stop request into a checkpoint and the
resize exit code.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from thrifty.contract import JobReport
from thrifty.errors import ThriftyError
from thrifty.goodput.model import BatchLimits, GoodputModel
from thrifty.goodput.noise import NoiseEstimator
from thrifty.train import adapt, oom, rng
from thrifty.train.attempts import AttemptTotals
from thrifty.train.checkpoint import CheckpointStore, JobState, check_writable
from thrifty.train.data import AdaptiveDataLoader, check_dataset
from thrifty.train.energy import EnergyMeter, replicas_kwh
from thrifty.train.env import TrainEnv
from thrifty.train.interface import StepOutcome
from thrifty.train.parallel import AdaptiveDataParallel
from thrifty.train.profile import StepProfile
from thrifty.train.report import Reporter, metric_values
from thrifty.train.scaling import ScalingRule
from thrifty.train.signals import EXIT_RESIZE, StopSignal

log = logging.getLogger(__name__)


class Job:
    """One replica's view of the training job. Create with `thrifty.train.init()`.

    It is what the loader and the wrapper report to (`thrifty.train.interface.JobHandle`), and
    composes the pieces that turn their reports into a resizable job: checkpoints and the random
    state (`checkpoint`, `rng`), adaptation (`adapt`), out-of-memory recovery (`oom`), start-up
    and energy totals (`attempts`, `energy`) and the reports the scheduler reads (`report`).
    """

    def __init__(
        self,
        env: TrainEnv,
        device: torch.device,
        adapt_every: int = 25,
        min_gain: float = 0.05,
        report_interval_s: float = 5.0,
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
        self.metrics: dict[str, float] = {}  # the script's latest, sent with every report
        self._user: dict[str, Any] = {}
        self._rng_pending = False
        self.store = CheckpointStore(env.checkpoint_dir) if env.checkpoint_dir else None
        self.restored: JobState | None = None
        self.restored_from: Path | None = None
        self.totals = AttemptTotals()
        self.meter = EnergyMeter(device)
        if env.checkpoint_dir is not None:
            check_writable(env.checkpoint_dir)
            self.local_caps = oom.read_caps(env.checkpoint_dir)
        if self.store is not None:
            latest = self.store.latest()
            if latest is not None:
                self.restored_from = latest[0]
                self.restored = JobState.from_dict(latest[1])
                self.epoch, self.step = self.restored.epoch, self.restored.step
                self.progress = self.restored.progress
                self.metrics = dict(self.restored.metrics)
                self._rng_pending = True
                self.totals.resume(self.restored.startup_s, self.restored.energy_kwh)
                log.info("resuming from %s (epoch %d, step %d)", latest[0], self.epoch, self.step)
        self.stop = StopSignal()
        self.reporter = (
            Reporter(env.report_to, report_interval_s) if env.report_to and env.rank == 0 else None
        )
        self._oom_exit = oom.OutOfMemoryExit(self._out_of_memory)
        self._closed = False
        self.owns_group = False  # a launcher's group (Ray Train's) is the launcher's to destroy

    # ---- building blocks ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.env.gpu_kind

    @property
    def same_world(self) -> bool:
        return self.restored is not None and self.restored.world_size == self.env.world_size

    @property
    def batches(self) -> AdaptiveDataLoader | None:
        """The adaptive loader, once `loader` created it."""
        return self.loader_

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
        check_dataset(length, world, low)
        self.limits = BatchLimits(
            init_batch_size=batch_size,
            max_batch_size=batch_size if max_batch_size is None else max_batch_size,
            min_local_bsz=low,
            max_local_bsz=high,
        )
        self.noise = NoiseEstimator(batch_size)
        restored = self.restored.loader if self.restored is not None else None
        total = batch_size if restored is None else int(restored["batch_size"])
        cap = self.local_caps.get(self.kind, self.limits.local_cap)
        atomic, accum = adapt.split(self.limits, world, total, cap)
        check_dataset(length, world, low, batch=world * atomic * (accum + 1))
        loader = AdaptiveDataLoader(
            self, dataset, atomic, accum, shuffle=shuffle,
            seed=self.seed if seed is None else seed, collate_fn=collate_fn,
        )
        if restored is not None and self.restored is not None:
            loader.sampler.load_state_dict(restored["sampler"])
            self.noise.load_state_dict(self.restored.noise)  # type: ignore[arg-type]
            self.profile.load_state_dict(self.restored.profile)  # type: ignore[arg-type]
        self.loader_ = loader
        return loader

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
        if self.restored is not None and self.restored.model is not None:
            wrapped.load_checkpoint(self.restored.model, self.same_world)
        self.model_ = wrapped
        return wrapped

    def register(self, name: str, obj: Any) -> None:
        """Checkpoint `obj` (anything with state_dict/load_state_dict) with the job."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise ThriftyError(f"cannot checkpoint {name!r}: it lacks state_dict/load_state_dict")
        self._user[name] = obj
        if self.restored is not None and name in self.restored.user:
            obj.load_state_dict(self.restored.user[name])

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
        if self._rng_pending and self.restored is not None:
            self._rng_pending = False
            rng.resume(self.restored.rng, self.same_world, self.env.rank, self.seed, self.step)

    # ---- after every optimizer step ----------------------------------------------------------

    def stop_requested(self) -> bool:
        return self.stop.requested is not None

    def after_step(self, outcome: StepOutcome) -> None:
        """Count the step the wrapper completed, learn from its timing, adapt, or stop."""
        self.step += 1
        self.progress += outcome.progress
        self.totals.step_done()
        self.profile.record(
            self.env.num_nodes, self.env.world_size, outcome.local_bsz, outcome.seconds,
            outcome.sync_s,
        )
        if self.step % self.adapt_every == 0:
            self._adapt()
        if outcome.stop:
            self._stop_and_exit()

    def goodput_model(self) -> GoodputModel | None:
        """What the job has learned about itself so far (None before any step was measured)."""
        return adapt.learned_model(
            self.profile, self.noise, self.limits, self.kind, self.env.world_size,
            self.local_caps, self.progress, self.target_progress,
        )

    def _adapt(self) -> None:
        """Rank 0 picks the configuration; everyone adopts what it broadcasts."""
        loader = self.loader_
        if loader is None:
            return
        self._measure_energy()
        choice = (loader.atomic_bsz, loader.accum_steps)
        if self.env.rank == 0:
            self.profile.fit()
            model = self.goodput_model()
            if model is not None and self.noise.stats() is not None:
                choice = adapt.better_config(model, self.kind, self.env, choice, self.min_gain)
            self._publish(model)
        atomic, accum = adapt.agree(choice, self.env, self.device)
        if (atomic, accum) != (loader.atomic_bsz, loader.accum_steps):
            log.info("batch: %d per replica × %d micro-steps", atomic, accum + 1)
            loader.set_config(atomic, accum)
            self.adoptions.append((self.step, atomic, accum))

    # ---- restart overhead, energy and reports ------------------------------------------------

    @property
    def startup_s(self) -> float | None:
        """Seconds all attempts so far spent starting (building, restoring, the first step)."""
        return self.totals.startup_s

    @property
    def energy_kwh(self) -> float | None:
        """kWh the job's GPUs drew over all attempts; None unless every attempt measured it."""
        return self.totals.energy_kwh

    def _measure_energy(self) -> None:
        """Sum the replicas' meters (collective: every replica calls it at the same step)."""
        if self.device.type == "cuda":
            self.totals.attempt_kwh = replicas_kwh(self.meter, self.device, self.env.distributed)

    def report_metrics(self, **metrics: float) -> None:
        """Send named results (`job.report_metrics(val_loss=0.31, accuracy=0.9)`) with the
        job's reports: what a tuner compares trials by. Each name keeps its latest value, also
        across restarts; values must be finite numbers."""
        self.metrics.update(metric_values(metrics))
        self._publish()

    def report(self, model: GoodputModel | None = None) -> JobReport | None:
        """The report this replica would send now (None before any step was measured)."""
        model = model or self.goodput_model()
        if model is None:
            return None
        return JobReport(
            model=model,
            job_id=self.env.job_id,
            step=self.step,
            epoch=self.epoch,
            batch_size=self.loader_.batch_size if self.loader_ else None,
            startup_s=self.startup_s,
            energy_kwh=self.energy_kwh,
            metrics=dict(self.metrics),
        )

    def _publish(self, model: GoodputModel | None = None) -> None:
        if self.reporter is None:
            return
        report = self.report(model)
        if report is not None:
            self.reporter.publish(report)

    # ---- checkpoints and stopping ------------------------------------------------------------

    def checkpoint(self) -> Path | None:
        """Save everything needed to resume exactly (collective: every replica must call it)."""
        if self.store is None:
            return None
        if self.model_ is not None and self.model_.drain():
            self.stop.requested = self.stop.requested or signal.SIGTERM
        self._measure_energy()
        states = rng.gather(self.env.distributed, self.env.world_size)
        path = None
        if self.env.rank == 0:
            loader = self.loader_
            state = JobState(
                epoch=self.epoch,
                step=self.step,
                progress=self.progress,
                world_size=self.env.world_size,
                startup_s=self.startup_s,
                energy_kwh=self.energy_kwh,
                rng=states,
                user={name: obj.state_dict() for name, obj in self._user.items()},
                model=self.model_.state_dict_for_checkpoint() if self.model_ else None,
                loader=loader.state_dict() if loader else None,
                noise=self.noise.state_dict() if loader else None,
                profile=self.profile.state_dict() if loader else None,
                metrics=self.metrics,
            )
            path = self.store.save(state.to_dict())
        if self.env.distributed:
            dist.barrier()
        return path

    def _stop_and_exit(self) -> None:
        log.warning("stop requested: checkpointing at step %d and exiting", self.step)
        self.checkpoint()
        self.finish()
        sys.exit(EXIT_RESIZE)

    def record_out_of_memory(self) -> int | None:
        """Lower this GPU kind's per-replica cap below the micro-batch that failed; the next
        start (from the last checkpoint) keeps the total batch by accumulating more."""
        loader = self.loader_
        if loader is None or self.env.checkpoint_dir is None:
            return None
        failed = max(loader.current_local, loader.atomic_bsz)
        return oom.lower_cap(self.env.checkpoint_dir, self.kind, failed, self.limits.min_local_bsz)

    def _out_of_memory(self) -> tuple[int, int] | None:
        cap = self.record_out_of_memory()
        return None if cap is None or self.loader_ is None else (self.loader_.current_local, cap)

    def finish(self) -> None:
        """Flush the last report and leave the process group cleanly (barrier first).

        The DDP wrapper holds the group (and so gloo's worker threads) alive: it is released
        and collected while the interpreter is still whole. A group still alive at interpreter
        shutdown aborts the process ("terminate called without an active exception", exit 134)
        instead of letting it leave with its exit code.

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
        # The stop handlers stay until the group is gone: a second SIGTERM during the barrier
        # would otherwise kill this replica by default while its peers still wait in it.
        if self.env.distributed and dist.is_initialized():
            dist.barrier()
            if self.owns_group:
                if self.model_ is not None:
                    self.model_.release()
                dist.destroy_process_group()
                gc.collect()  # free gloo's threads now, not during interpreter shutdown
        self.stop.close()
        self._oom_exit.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None or kind is SystemExit:
            self.finish()


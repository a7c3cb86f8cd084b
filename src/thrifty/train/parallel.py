"""Data parallelism that measures itself: step times, gradient noise and learning-rate scaling.

`AdaptiveDataParallel` wraps the user's model (in `DistributedDataParallel` when there are several
replicas) and takes over the optimizer's `step` and `zero_grad`, so the user's loop stays
`loss.backward(); optimizer.step()`:

- during accumulation micro-steps the gradients are not synchronised, `step` and `zero_grad` do
  nothing, and the micro-step's compute time is recorded;
- on the step that completes a global batch it measures the gradient noise, averages the
  accumulated gradients, scales the learning rate by the chosen rule for exactly that step, steps,
  and hands the job the timings and statistics it needs to adapt, report and checkpoint.

Gradient noise needs at least two independent partial gradients per step (`goodput.noise`): the
replicas' local gradients, read in a DDP communication hook before they are averaged; on one
replica, the accumulation micro-steps; on one replica without accumulation, this step's gradient
and the previous one's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from thrifty.train.interface import StepOutcome
from thrifty.train.scaling import ScalingRule, bounded_gain, choose_rule

if TYPE_CHECKING:
    from thrifty.train.interface import JobHandle


def _hook(state, bucket):  # type: ignore[no-untyped-def]
    """DDP's entry point (left unannotated: DDP checks annotations by identity, and postponed
    annotations would be strings); `state` is the AdaptiveDataParallel."""
    return state._comm_hook(bucket)


def _plain_function(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` as a function carrying the mark PyTorch's LR schedulers look for, so that they
    keep counting steps (and stay quiet) after `optimizer.step` is replaced."""

    def step(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    return step


class AdaptiveDataParallel(nn.Module):
    """The user's model, replicated, instrumented and driving the optimizer's learning rate."""

    def __init__(
        self,
        job: JobHandle,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        scaling: str | ScalingRule = "auto",
        grad_scaler: Any = None,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__()
        self.job = job
        self.module = module
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.grad_scaler = grad_scaler
        self.rule = choose_rule(scaling, optimizer)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self._weights: dict[torch.Tensor, torch.Tensor] = {}  # preconditioner per parameter
        self._micro_start = time.perf_counter()
        self._last_end: float | None = None
        self._pending_micro = 0
        self._piece_sqr = 0.0  # one replica: sum of micro-step gradient norms this step
        self._prev_flat: torch.Tensor | None = None
        self._prev_batch = 0
        self._local_sqr: torch.Tensor | None = None
        self._mean_parts: list[torch.Tensor] = []
        self._measuring = False  # whether this optimizer step measures gradient noise
        self._inflight: tuple[Any, torch.Tensor, tuple[float, int, float] | None] | None = None
        self._stop_vote: tuple[Any, torch.Tensor] | None = None  # this step's, while in flight
        self._spans: list[tuple[float, float]] = []
        self.last_lr_factor = 1.0  # the last step's, within rule.bounds(init, last_batch)
        self.last_batch = 0  # samples the last optimizer step averaged, over all replicas
        self.ddp: DistributedDataParallel | None = None
        if job.env.distributed:
            if job.device.type == "cuda":
                ddp_kwargs.setdefault("device_ids", [job.device.index])
            self.ddp = DistributedDataParallel(module, **ddp_kwargs)
            self.ddp.register_comm_hook(self, _hook)
        self._orig_step = optimizer.step
        self._orig_zero_grad = optimizer.zero_grad
        optimizer.step = _plain_function(self._step)  # type: ignore[method-assign]
        optimizer.zero_grad = self._zero_grad  # type: ignore[method-assign]

    # ---- forward -----------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.module(*args, **kwargs)  # evaluation: no timing, no collectives
        self._micro_start = time.perf_counter()
        every = self.job.stats_every
        self._measuring = (self.job.step + 1) % every == 0
        self._keep_prev = every > 1 and (self.job.step + 2) % every == 0
        if self.ddp is None:
            return self.module(*args, **kwargs)
        loader = self.job.batches
        self.ddp.require_backward_grad_sync = loader is None or loader.is_sync_micro
        return self.ddp(*args, **kwargs)

    # ---- gradient norms ----------------------------------------------------------------------

    def _sqr(self, grads: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Squared norm of gradients, in the preconditioned space when the rule asks for it."""
        total = torch.zeros((), device=self.job.device)
        for param, grad in grads:
            flat = grad.reshape(-1)
            weight = self._weights.get(param)
            if weight is None:
                total += torch.dot(flat, flat)
            else:
                total += torch.dot(flat * weight.reshape(-1), flat)
        return total

    def _comm_hook(self, bucket: dist.GradBucket) -> torch.futures.Future:
        """All-reduce (mean) one bucket, first noting its local squared norm and timing."""
        start = time.perf_counter()
        if self._stop_vote is None:
            self._stop_vote = self._cast_stop_vote()
        buffer = bucket.buffer()
        measuring = self._measuring
        plain = measuring and not self._weights
        if measuring:
            if plain:
                local = torch.dot(buffer, buffer)
            else:
                local = self._sqr(zip(bucket.parameters(), bucket.gradients(), strict=True))
            self._local_sqr = local if self._local_sqr is None else self._local_sqr + local
        buffer.div_(self.job.env.world_size)
        future = dist.all_reduce(buffer, async_op=True).get_future()
        spans = self._spans
        means = self._mean_parts

        def done(fut: torch.futures.Future) -> torch.Tensor:
            averaged = fut.value()[0]
            if plain:
                means.append(torch.dot(averaged, averaged))
            spans.append((start, time.perf_counter()))
            return averaged

        return future.then(done)

    def _cast_stop_vote(self) -> tuple[Any, torch.Tensor]:
        """Ask every replica, beside the step's first gradient bucket, whether it was told to stop.

        The answer is summed while the gradients are, so that every replica knows it when the
        step ends and they all checkpoint at that same boundary: a signal reaches the replicas
        it reaches, and they must not stop one step apart.
        """
        flag = torch.tensor([float(self.job.stop_requested())], device=self.job.device)
        return dist.all_reduce(flag, async_op=True), flag

    def _stop_voted(self) -> bool:
        """Whether any replica was asked to stop before this step's gradients were reduced."""
        if self._stop_vote is None:
            return False
        work, flag = self._stop_vote
        self._stop_vote = None
        work.wait()
        return bool(flag[0] > 0)

    def _grads(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for param in self.params:
            if param.grad is not None:
                yield param, param.grad

    def _flat(self) -> torch.Tensor:
        """The current gradient as one vector, scaled by √preconditioner where one applies."""
        parts = []
        for param, grad in self._grads():
            weight = self._weights.get(param)
            parts.append((grad if weight is None else grad * weight.sqrt()).reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0, device=self.job.device)

    def _update_weights(self) -> None:
        """Adam's preconditioner 1/(√v̂ + ε)², squared because it weighs squared norms."""
        if not self.rule.preconditioned:
            return
        for group in self.optimizer.param_groups:
            beta2 = group.get("betas", (0.9, 0.999))[1]
            eps = group.get("eps", 1e-8)
            for param in group["params"]:
                state = self.optimizer.state.get(param, {})
                if "exp_avg_sq" not in state:
                    continue
                steps = float(state.get("step", 1))
                corrected = state["exp_avg_sq"] / (1 - beta2 ** max(steps, 1.0))
                self._weights[param] = (corrected.sqrt() + eps).pow(-2)

    # ---- optimizer hooks ---------------------------------------------------------------------

    def _zero_grad(self, set_to_none: bool = True) -> None:
        if self._pending_micro:
            return  # in the middle of accumulating: keep the gradients
        self._orig_zero_grad(set_to_none=set_to_none)

    def _step(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._timed_step(*args, **kwargs)
        finally:
            self._last_end = time.perf_counter()

    def restart_clock(self) -> None:
        """Do not time the next step: something other than training (evaluation, a checkpoint)
        happened since the last one."""
        self._last_end = None

    def _timed_step(self, *args: Any, **kwargs: Any) -> Any:
        # A step's time runs from the end of the previous one: loading the batch, forward,
        # backward, synchronisation and the update all count, as they do for throughput.
        now = time.perf_counter()
        seconds = now - self._last_end if self._last_end is not None else 0.0
        job = self.job
        loader = job.batches
        in_batch = loader is not None and loader.in_batch
        local = loader.current_local if in_batch else 0
        if loader is not None and not loader.is_sync_micro:
            if seconds > 0:
                job.profile.record_compute(local, seconds)
            if self.ddp is None and self._measuring:
                flat = self._flat()
                prev = self._prev_flat if self._pending_micro else None
                piece = flat if prev is None else flat - prev
                self._piece_sqr += float(piece.pow(2).sum())
                self._prev_flat = flat
            self._pending_micro += 1
            return None
        micro = self._pending_micro + 1
        total = loader.current_batch_size if in_batch else 0
        stop = self._measure_noise(micro, total)
        if micro > 1:
            for _, grad in self._grads():
                grad.div_(micro)
        batch = total or job.limits.init_batch_size
        stats = job.noise.stats()
        factor = self.rule.factor(stats, job.limits.init_batch_size, batch)
        saved = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        try:
            result = self._orig_step(*args, **kwargs)
        finally:
            for group, lr in zip(self.optimizer.param_groups, saved, strict=True):
                group["lr"] = lr
        if seconds > 0:
            seconds = time.perf_counter() - self._last_end  # type: ignore[operator]
        self.last_lr_factor = factor
        self.last_batch = batch
        self._pending_micro = 0
        self._update_weights()
        sync = 0.0
        if self._spans:
            sync, busy_until = 0.0, 0.0
            for begin, end in sorted(self._spans):
                sync += end - max(begin, busy_until)
                busy_until = end
            self._spans = []
        progress = 1.0 if stats is None else bounded_gain(stats, job.limits.init_batch_size, batch)
        job.after_step(StepOutcome(local or batch, seconds, sync, progress, stop))
        return result

    def _measure_noise(self, micro: int, total: int) -> bool:
        """Fold this step's gradient norms into the job's noise estimate; returns whether any
        replica was asked to stop (the flag rides on the same all-reduce)."""
        job = self.job
        stop_here = job.stop_requested()
        if self.ddp is not None:
            # Whether to stop was settled beside the gradients. The local norms are summed over
            # replicas in the background and read at the next step, so this small all-reduce
            # never stalls training; the stop flag it also carries covers steps without a vote.
            stop = self._stop_voted() | self.drain()
            world = job.env.world_size
            meta = None
            local = torch.zeros((), device=job.device)
            if self._measuring and total > 0 and self._local_sqr is not None:
                local = self._local_sqr
                if self._weights or not self._mean_parts:
                    mean = self._sqr(self._grads())
                else:
                    mean = torch.stack(self._mean_parts).sum()
                meta = (float(mean) / micro**2, world, total / world, micro)
            self._local_sqr = None
            self._mean_parts.clear()
            packed = torch.stack(
                [local.to(job.device, torch.float64).reshape(()),
                 torch.tensor(float(stop_here), device=job.device, dtype=torch.float64)]
            )
            work = dist.all_reduce(packed, async_op=True)
            self._inflight = (work, packed, meta)
            return stop
        if not self._measuring:
            if self._keep_prev and micro == 1:
                self._prev_flat = self._flat()
                self._prev_batch = total
            else:
                self._prev_flat = None
            self._piece_sqr = 0.0
            return stop_here
        if micro > 1:
            flat = self._flat()
            piece = flat - self._prev_flat if self._prev_flat is not None else flat
            piece_sqr = (self._piece_sqr + float(piece.pow(2).sum())) / micro
            self._piece_sqr = 0.0
            self._prev_flat = None
            self._prev_batch = 0
            mean_sqr = float(flat.pow(2).sum()) / micro**2
            if total > 0:
                job.noise.update(piece_sqr, mean_sqr, micro, total / micro)
            return stop_here
        # One replica, no accumulation: pair this step's gradient with the previous one's.
        flat = self._flat()
        if self._prev_flat is not None and self._prev_batch == total and total > 0:
            piece_sqr = (float(flat.pow(2).sum()) + float(self._prev_flat.pow(2).sum())) / 2
            mean_sqr = float((flat + self._prev_flat).pow(2).sum()) / 4
            job.noise.update(piece_sqr, mean_sqr, 2, total)
        if job.stats_every == 1:
            self._prev_flat = flat.detach().clone()
            self._prev_batch = total
        else:
            self._prev_flat = None
        return stop_here

    def drain(self) -> bool:
        """Finish the previous step's statistics all-reduce; returns whether a stop was asked."""
        if self._inflight is None:
            return False
        work, packed, meta = self._inflight
        self._inflight = None
        work.wait()
        if meta is not None:
            mean_sqr, world, piece_batch, micro = meta
            piece_sqr = float(packed[0]) / world / micro**2
            self.job.noise.update(piece_sqr, mean_sqr, int(world), piece_batch)
        return bool(packed[1] > 0)

    def release(self) -> None:
        """Drop the DDP wrapper and its reference to the process group (training is over:
        `finish` calls this before destroying the group). The model itself stays usable."""
        self.drain()
        self._stop_voted()  # no collective may be left in flight when the group goes
        self.ddp = None

    # ---- checkpoint --------------------------------------------------------------------------

    def state_dict_for_checkpoint(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "prev_flat": None if self._prev_flat is None else self._prev_flat.cpu(),
            "prev_batch": self._prev_batch,
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_checkpoint(self, state: dict[str, Any], same_world: bool) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        if same_world and self.ddp is None and state.get("prev_flat") is not None:
            self._prev_flat = state["prev_flat"].to(self.job.device)
            self._prev_batch = int(state["prev_batch"])
        self._update_weights()

"""The early-stopping engine: a sweep's trials over an Optuna study, decisions returned as values.

`Sweep` is pure of the cluster: it proposes trials (`suggest`), takes reports of (epoch, metric,
seconds) as they arrive, in any order across trials (`report`), and answers what each trial
should do next (`Decision`). Whoever runs the trials, the simulator or later the control plane,
acts on the answers. Sampling is Optuna's ask/tell; pruning is Optuna's pruners fed by
`trial.report(value, epoch)` and asked by `trial.should_prune()`. The only I/O is Optuna's
storage: in memory by default, or an SQLAlchemy URL so that a live sweep survives a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import optuna
from optuna.trial import TrialState

from thrifty.errors import ThriftyError
from thrifty.tune.spec import Choice, Median, NoStopping, SweepSpec

Action = Literal["continue", "prune", "complete", "stop"]
State = Literal["running", "pruned", "completed", "stopped", "failed"]


@dataclass(frozen=True)
class Trial:
    """A trial to start: its id (Optuna's trial number) and typed hyperparameters."""

    id: int
    params: dict[str, Choice]


@dataclass(frozen=True)
class Decision:
    """What a trial does after a report.

    `continue`: train the next epoch. `prune`: stop, it failed rung `rung` (1 is the grace
    epoch). `complete`: stop, it reached max_epochs or the sweep's target. `stop`: stop, the
    sweep is over (target reached elsewhere, or the wall-time or spend budget is used up).
    `rung` is the number of rungs the trial has reached, the scheduler's measure of promise.
    """

    action: Action
    rung: int
    reason: str = ""


@dataclass(frozen=True)
class TrialStatus:
    """One trial as the sweep sees it; `best` is the best value it reported at any epoch."""

    id: int
    params: dict[str, Choice]
    state: State
    epoch: int
    rung: int
    value: float | None
    best: float | None
    elapsed_s: float
    slot_s: float
    reason: str


@dataclass(frozen=True)
class SweepStatus:
    """The whole sweep: every trial, counts by state, best value, spend, and why it stopped."""

    trials: tuple[TrialStatus, ...]
    suggested: int
    running: int
    pruned: int
    completed: int
    failed: int
    best: float | None
    slot_hours: float
    stopped: str | None


@dataclass
class _Live:
    handle: optuna.Trial
    params: dict[str, Choice]
    state: State = "running"
    epoch: int = 0
    rung: int = 0
    value: float | None = None
    best: float | None = None
    elapsed_s: float = 0.0
    slot_s: float = 0.0
    reason: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for `spec.sampler`, seeded so that a sweep replays exactly."""
    seed = spec.sampler.seed
    if spec.sampler.type == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if spec.sampler.type == "grid":
        grid = {name: param.grid() for name, param in spec.space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)  # type: ignore[arg-type]
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """Optuna's pruner for `spec.stopping`; epochs are the resource."""
    stop = spec.stopping
    if isinstance(stop, NoStopping):
        return optuna.pruners.NopPruner()
    if isinstance(stop, Median):
        return optuna.pruners.MedianPruner(
            n_startup_trials=stop.startup_trials, n_warmup_steps=stop.warmup_epochs
        )
    if stop.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=stop.grace_epochs, max_resource=stop.max_epochs,
            reduction_factor=stop.reduction_factor,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=stop.grace_epochs, reduction_factor=stop.reduction_factor
    )


class Sweep:
    """One sweep's trials and their early stopping.

    `storage`: None for Optuna's in-memory storage, or an SQLAlchemy URL. `usd_per_slot_hour`
    prices a slot-hour for `budget.usd` (required when that budget is set). `start_s` is the
    clock reading at which the sweep began, for `budget.wall_s`; time is always passed in.
    """

    def __init__(
        self,
        spec: SweepSpec,
        storage: str | None = None,
        usd_per_slot_hour: float | None = None,
        start_s: float = 0.0,
    ) -> None:
        if spec.budget.usd is not None and not usd_per_slot_hour:
            raise ThriftyError(
                "budget.usd needs a price: pass usd_per_slot_hour, or drop budget.usd"
            )
        self.spec = spec
        self.usd_per_slot_hour = usd_per_slot_hour
        self.start_s = start_s
        self.rungs = spec.stopping.rungs()
        self.study = optuna.create_study(
            storage=storage,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
            study_name=spec.name,
            direction="maximize" if spec.mode == "max" else "minimize",
        )
        self._trials: dict[int, _Live] = {}
        self._best: float | None = None
        self._stopped: str | None = None  # no new trials
        self._over: str | None = None  # and running trials stop too: target or spend reached

    # -- proposing ----------------------------------------------------------------------------

    def suggest(self, now_s: float | None = None) -> Trial | None:
        """A new trial, or None: when `max_concurrent` trials run (try again once one ends), or
        when the sweep has stopped (`stopped` then says why: trials, grid, target, budget)."""
        if self._stop_reason(now_s) is not None:
            return None
        if self.running() >= self.spec.max_concurrent:
            return None
        handle = self.study.ask()
        params = {name: self._sample(handle, name) for name in self.spec.space}
        self._trials[handle.number] = _Live(handle=handle, params=params)
        return Trial(id=handle.number, params=params)

    def _sample(self, handle: optuna.Trial, name: str) -> Choice:
        param = self.spec.space[name]
        if param.type == "categorical":
            return handle.suggest_categorical(name, param.choices)  # type: ignore[arg-type]
        assert param.low is not None and param.high is not None
        if param.type == "int":
            return handle.suggest_int(name, int(param.low), int(param.high),
                                      step=int(param.step or 1))
        return handle.suggest_float(name, param.low, param.high, step=param.step,
                                    log=param.type == "loguniform")

    @property
    def stopped(self) -> str | None:
        """Why no more trials will be suggested, or None while the sweep goes on."""
        return self._stopped

    def _stop_reason(self, now_s: float | None) -> str | None:
        if self._stopped is None:
            self._over = self._spend_reason(now_s)
            self._stopped = self._over or self._count_reason()
        return self._stopped

    def _count_reason(self) -> str | None:
        """The trial budget or the grid that is used up: running trials still finish."""
        budget = self.spec.budget
        grid = self.spec.grid_size() if self.spec.sampler.type == "grid" else None
        if len(self._trials) >= budget.trials:
            return f"budget of {budget.trials} trials used"
        if grid is not None and len(self._trials) >= grid:
            return f"grid of {grid} configurations exhausted"
        return None

    def _spend_reason(self, now_s: float | None) -> str | None:
        """The target reached, or the wall-time, slot-hour or dollar budget used up, if any:
        these end the running trials too."""
        budget, hours = self.spec.budget, self.slot_hours()
        if self._target_reached():
            return f"target {self.spec.target:g} reached"
        if budget.wall_s is not None and now_s is not None and now_s - self.start_s >= \
                budget.wall_s:
            return f"wall-time budget of {budget.wall_s:g} s used"
        if budget.gpu_hours is not None and hours >= budget.gpu_hours:
            return f"budget of {budget.gpu_hours:g} slot-hours used"
        if budget.usd is not None and hours * (self.usd_per_slot_hour or 0) >= budget.usd:
            return f"budget of {budget.usd:g} USD used"
        return None

    def _target_reached(self) -> bool:
        target = self.spec.target
        return target is not None and self._best is not None and self.spec.reaches(self._best,
                                                                                     target)

    # -- reports ------------------------------------------------------------------------------

    def report(
        self,
        trial_id: int,
        epoch: int,
        value: float,
        elapsed_s: float,
        slot_s: float | None = None,
        now_s: float | None = None,
    ) -> Decision:
        """Record `value` of the metric after `epoch` (1-based), `elapsed_s` wall seconds and
        `slot_s` slot-seconds (default: elapsed_s, one slot) the trial has used so far, and
        decide what it does next."""
        live = self._running(trial_id)
        if epoch <= live.epoch:
            raise ThriftyError(
                f"trial {trial_id}: epoch {epoch} reported after epoch {live.epoch}; report each "
                "epoch once, in order"
            )
        live.epoch, live.elapsed_s = epoch, elapsed_s
        live.slot_s = elapsed_s if slot_s is None else slot_s
        if not math.isfinite(value):
            return self._end(live, "pruned", "prune", f"{self.spec.metric} is {value}")
        live.value = value
        if live.best is None or self.spec.better(value, live.best):
            live.best = value
        if self._best is None or self.spec.better(value, self._best):
            self._best = value
        live.handle.report(value, epoch)
        live.rung = sum(1 for r in self.rungs if r <= epoch)
        if epoch >= self.spec.max_epochs:
            return self._end(live, "completed", "complete", f"reached {epoch} epochs")
        if self.spec.target is not None and self.spec.reaches(value, self.spec.target):
            self._stopped = self._over = f"target {self.spec.target:g} reached"
            return self._end(live, "completed", "complete", self._stopped)
        over = self._over or self._spend_reason(now_s)
        if over is not None:
            self._over = over
            self._stopped = self._stopped or over
            return self._end(live, "stopped", "stop", over)
        if live.handle.should_prune():
            rung = max(live.rung, 1)
            return self._end(live, "pruned", "prune",
                             f"{self.spec.metric} {value:g} too low at rung {rung} (epoch {epoch})")
        return Decision("continue", live.rung)

    def fail(self, trial_id: int, why: str) -> None:
        """The trial crashed or was lost; it counts as failed and samplers learn nothing."""
        self._end(self._running(trial_id), "failed", "stop", why)

    def finish(self, trial_id: int) -> None:
        """The trial ended on its own before max_epochs (its script returned): it completes with
        its last value, or fails when it never reported one."""
        live = self._running(trial_id)
        if live.value is None:
            self._end(live, "failed", "stop", "ended without reporting a value")
        else:
            self._end(live, "completed", "complete", "ended by its job")

    def _running(self, trial_id: int) -> _Live:
        live = self._trials.get(trial_id)
        if live is None:
            raise ThriftyError(f"no trial {trial_id} in sweep {self.spec.name!r}")
        if live.state != "running":
            raise ThriftyError(f"trial {trial_id} already ended ({live.state}); "
                               "report only running trials")
        return live

    def _end(self, live: _Live, state: State, action: Action, reason: str) -> Decision:
        live.state, live.reason = state, reason
        if state == "completed":
            self.study.tell(live.handle, live.value)
        elif state == "failed":
            self.study.tell(live.handle, state=TrialState.FAIL)
        else:  # pruned, or stopped with the sweep: Optuna keeps its intermediate values
            self.study.tell(live.handle, state=TrialState.PRUNED)
        rung = max(live.rung, 1) if state == "pruned" else live.rung
        return Decision(action, rung, reason)

    # -- views --------------------------------------------------------------------------------

    def running(self) -> int:
        return sum(1 for t in self._trials.values() if t.state == "running")

    def slot_hours(self) -> float:
        return sum(t.slot_s for t in self._trials.values()) / 3600.0

    def trial(self, trial_id: int) -> TrialStatus:
        live = self._trials.get(trial_id)
        if live is None:
            raise ThriftyError(f"no trial {trial_id} in sweep {self.spec.name!r}")
        return TrialStatus(
            id=trial_id, params=dict(live.params), state=live.state, epoch=live.epoch,
            rung=live.rung, value=live.value, best=live.best, elapsed_s=live.elapsed_s,
            slot_s=live.slot_s, reason=live.reason,
        )

    def best(self) -> TrialStatus | None:
        """The trial with the best value reported at any epoch (its best checkpoint), if any."""
        scored = [t for t in self._trials.values() if t.best is not None]
        if not scored:
            return None
        key = (lambda t: t.best) if self.spec.mode == "max" else (lambda t: -t.best)
        winner = max(scored, key=key)  # type: ignore[arg-type, return-value]
        return self.trial(winner.handle.number)

    def status(self) -> SweepStatus:
        trials = tuple(self.trial(i) for i in sorted(self._trials))
        count = {s: sum(1 for t in trials if t.state == s) for s in ("running", "pruned",
                                                                    "completed", "failed")}
        return SweepStatus(
            trials=trials, suggested=len(trials), running=count["running"],
            pruned=count["pruned"], completed=count["completed"], failed=count["failed"],
            best=self._best, slot_hours=self.slot_hours(), stopped=self._stopped,
        )

"""Sweeps replayed on simulated slots from recorded learning curves, in simulated time.

A trial's accuracy after each epoch, and the seconds that epoch took on one slot, come from the
recorded curve of its configuration under one of the recorded seeds (picked from the run's seed
and the trial id). The sweep itself is the real engine (`thrifty.tune.engine.Sweep` over Optuna),
so sampling and pruning are exactly what a live sweep would do. Three strategies:

- `random-full`: random search, every trial trained to max_epochs on one slot.
- `asha-fixed`: the same random trials under ASHA, one slot each, as Ray Tune runs ASHA:
  pruned trials free their slot and a new trial starts on it.
- `thrifty`: ASHA, plus slots that no new trial can use (the trial budget is spent) go to the
  running trials, shared in proportion to `rung_weight ** rung`, capped where the trial's
  speed-up stops growing (`thrifty.tune.speedup`). A trial grows only when the time it saves
  before its next rung exceeds the restart it costs (`restart_s`, progress kept by its
  checkpoint); it never shrinks, so a running trial is never slowed down.

Deterministic given the seed: the sampler is seeded, ties break by trial id.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from thrifty.errors import ThriftyError
from thrifty.tune.curves import HYPERPARAMETERS, Config, Curve, CurveSet
from thrifty.tune.engine import Sweep
from thrifty.tune.spec import SweepSpec, validate_sweep
from thrifty.tune.speedup import ReplicaSpeedup, SpeedupTable

Strategy = Literal["random-full", "asha-fixed", "thrifty"]
STRATEGIES: tuple[Strategy, ...] = ("random-full", "asha-fixed", "thrifty")
RESTART_S = 5.0  # seconds a trial pauses to resize: checkpoint, relaunch, reload (assumed)


@dataclass(frozen=True)
class SimSettings:
    """One simulated sweep: the model whose curves to replay and how the sweep runs."""

    model: str
    slots: int = 64
    trials: int = 256
    seed: int = 0
    grace_epochs: int = 1
    reduction_factor: int = 3
    rung_weight: float = 1.0
    restart_s: float = RESTART_S


@dataclass(frozen=True)
class SimResult:
    """What one simulated sweep achieved; times in simulated seconds, spend in slot-hours.

    `improvements` holds (seconds, slot-hours used, best accuracy) each time the best-so-far
    accuracy rose, so that the time to any target is read off one run.
    """

    strategy: Strategy
    seed: int
    improvements: tuple[tuple[float, float, float], ...]
    total_slot_hours: float
    makespan_s: float
    best: float
    started: int
    pruned: int
    completed: int
    peak_slots: int  # most slots in use at once
    trial_epochs: tuple[int, ...]  # epochs each trial trained, by trial id

    def to_target(self, target: float) -> tuple[float, float]:
        """(seconds, slot-hours) until the best-so-far accuracy first reached `target`; both
        infinite when it never did."""
        for seconds, hours, best in self.improvements:
            if best >= target:
                return seconds, hours
        return math.inf, math.inf


@dataclass
class _Running:
    id: int
    curve: Curve
    batch_size: int
    speed: ReplicaSpeedup
    start_s: float
    slots: int = 1
    epoch: int = 0  # epochs finished
    frac: float = 0.0  # share of the current epoch done
    resume_s: float = 0.0  # paused for a resize until then
    slot_s: float = 0.0
    rung: int = 0
    factor: float = 1.0  # speed-up of `slots` replicas over one
    cap: int = 1  # most replicas worth giving it

    def rate(self) -> float:
        """Share of the current epoch done per second of running."""
        return self.factor / self.curve.epoch_s[self.epoch]

    def done_at(self, now: float) -> float:
        return max(now, self.resume_s) + (1.0 - self.frac) / self.rate()


class ConfigSpace:
    """The search space over a model's recorded configurations: one categorical per
    hyperparameter over its recorded values; a sampled combination that was not recorded
    replays the nearest recorded one (fewest steps along each hyperparameter's sorted values)."""

    def __init__(self, source: CurveSet, model: str) -> None:
        self.configs = source.configs(model)
        if not self.configs:
            raise ThriftyError(f"no curves for model {model!r}; recorded: "
                               f"{', '.join(source.models())}")
        self.values = {name: sorted({getattr(c, name) for c in self.configs})
                       for name in HYPERPARAMETERS}
        self._ranks = [self._rank(c.as_params()) for c in self.configs]

    def _rank(self, params: dict) -> tuple[int, ...]:
        return tuple(self.values[name].index(params[name]) for name in HYPERPARAMETERS)

    def space(self) -> dict[str, dict]:
        return {name: {"type": "categorical", "choices": values}
                for name, values in self.values.items()}

    def nearest(self, params: dict) -> Config:
        rank = self._rank(params)
        distance = [sum(abs(a - b) for a, b in zip(rank, r, strict=True)) for r in self._ranks]
        return self.configs[distance.index(min(distance))]


def sweep_spec(strategy: Strategy, settings: SimSettings, space: ConfigSpace,
               max_epochs: int) -> SweepSpec:
    """The sweep each strategy runs: random sampling with the run's seed, ASHA or none."""
    if strategy == "random-full":
        stopping: dict = {"type": "none", "max_epochs": max_epochs}
    else:
        stopping = {"type": "asha", "max_epochs": max_epochs,
                    "grace_epochs": settings.grace_epochs,
                    "reduction_factor": settings.reduction_factor}
    return validate_sweep({
        "name": f"sim-{settings.model}-{strategy}-{settings.seed}", "job": {},
        "space": space.space(), "metric": "accuracy", "mode": "max",
        "budget": {"trials": settings.trials}, "sampler": {"type": "random",
                                                           "seed": settings.seed},
        "stopping": stopping, "max_concurrent": settings.slots,
        "rung_weight": settings.rung_weight,
    })


def max_epochs_of(source: CurveSet, model: str) -> int:
    """Epochs every recorded curve of the model has."""
    configs = source.configs(model)
    return min(source.curve(c, s).epochs for c in configs for s in source.seeds(c))


def simulate(source: CurveSet, strategy: Strategy, settings: SimSettings,
             speedups: SpeedupTable | None = None) -> SimResult:
    """Replay one sweep of `settings.trials` trials on `settings.slots` slots."""
    if strategy not in STRATEGIES:
        raise ThriftyError(f"unknown strategy {strategy!r}; use {', '.join(STRATEGIES)}")
    if settings.slots < 1:
        raise ThriftyError(f"slots must be at least 1, got {settings.slots}")
    return _Replay(source, strategy, settings, speedups or SpeedupTable(source,
                                                                        settings.model)).run()


class _Replay:
    def __init__(self, source: CurveSet, strategy: Strategy, settings: SimSettings,
                 speedups: SpeedupTable) -> None:
        self.source, self.strategy, self.settings = source, strategy, settings
        self.speedups = speedups
        self.space = ConfigSpace(source, settings.model)
        self.max_epochs = max_epochs_of(source, settings.model)
        self.spec = sweep_spec(strategy, settings, self.space, self.max_epochs)
        self.sweep = Sweep(self.spec)
        self.now = 0.0
        self.slot_s = 0.0
        self.running: dict[int, _Running] = {}
        self.epochs: dict[int, int] = {}
        self.best = -math.inf
        self.improvements: list[tuple[float, float, float]] = []
        self.peak = 0

    def run(self) -> SimResult:
        self._fill()
        while self.running:
            done_at, trial_id = min((t.done_at(self.now), t.id) for t in self.running.values())
            self._advance(done_at)
            self._epoch_done(self.running[trial_id])
            self._fill()
            if self.strategy == "thrifty":
                self._grow()
        status = self.sweep.status()
        return SimResult(
            strategy=self.strategy, seed=self.settings.seed,
            improvements=tuple(self.improvements), total_slot_hours=self.slot_s / 3600,
            makespan_s=self.now, best=self.best,
            started=status.suggested, pruned=status.pruned, completed=status.completed,
            peak_slots=self.peak, trial_epochs=tuple(self.epochs[i] for i in sorted(self.epochs)),
        )

    def _used(self) -> int:
        return sum(t.slots for t in self.running.values())

    def _fill(self) -> None:
        """Start new trials on free slots while the sweep suggests them."""
        while self._used() < self.settings.slots:
            trial = self.sweep.suggest(self.now)
            if trial is None:
                break
            config = self.space.nearest(trial.params)
            seeds = self.source.seeds(config)
            pick = random.Random(f"{self.settings.seed}:{trial.id}").choice(seeds)
            speed = self.speedups.for_config(config)
            self.running[trial.id] = _Running(
                id=trial.id, curve=self.source.curve(config, pick),
                batch_size=config.batch_size, speed=speed, start_s=self.now, resume_s=self.now,
                cap=speed.useful_replicas(config.batch_size, self.settings.slots),
            )
            self.epochs[trial.id] = 0
        self.peak = max(self.peak, self._used())

    def _advance(self, until: float) -> None:
        step = until - self.now
        for t in self.running.values():
            active = max(0.0, until - max(self.now, t.resume_s))
            t.frac += active * t.rate()
            t.slot_s += t.slots * step
            self.slot_s += t.slots * step
        self.now = until

    def _epoch_done(self, t: _Running) -> None:
        t.epoch += 1
        t.frac = 0.0
        self.epochs[t.id] = t.epoch
        value = t.curve.accuracy[t.epoch - 1]
        if value > self.best:
            self.best = value
            self.improvements.append((self.now, self.slot_s / 3600, value))
        decision = self.sweep.report(t.id, t.epoch, value, elapsed_s=self.now - t.start_s,
                                     slot_s=t.slot_s, now_s=self.now)
        t.rung = decision.rung
        if decision.action != "continue":
            del self.running[t.id]

    def _remaining_s(self, t: _Running) -> float:
        """One-slot seconds left until the trial's next rung (or its end): the work a resize
        can be sure to speed up before the trial may be pruned."""
        rungs = [r for r in self.sweep.rungs if r > t.epoch] + [self.max_epochs]
        upto = min(rungs)
        left = (1.0 - t.frac) * t.curve.epoch_s[t.epoch]
        return left + sum(t.curve.epoch_s[t.epoch + 1:upto])

    def _grow(self) -> None:
        """Share idle slots among running trials by weight per slot held, then keep only the
        resizes that save more time before the next rung than the restart costs."""
        free = self.settings.slots - self._used()
        if free <= 0 or not self.running or self.sweep.stopped is None:
            return
        trials = sorted(self.running.values(), key=lambda t: t.id)
        caps = {t.id: t.cap for t in trials}
        want = {t.id: t.slots for t in trials}
        weight = {t.id: self.spec.rung_weight ** t.rung for t in trials}
        for _ in range(free):
            open_ = [t.id for t in trials if want[t.id] < caps[t.id]]
            if not open_:
                break
            pick = max(open_, key=lambda i: (weight[i] / want[i], -i))
            want[pick] += 1
        for t in trials:
            if want[t.id] > t.slots and self._worth(t, want[t.id]):
                t.slots = want[t.id]
                t.factor = t.speed.speedup(t.slots, t.batch_size)
                t.resume_s = max(t.resume_s, self.now) + self.settings.restart_s
        self.peak = max(self.peak, self._used())

    def _worth(self, t: _Running, slots: int) -> bool:
        after = t.speed.speedup(slots, t.batch_size)
        saved = self._remaining_s(t) * (1.0 / t.factor - 1.0 / after)
        return saved > self.settings.restart_s

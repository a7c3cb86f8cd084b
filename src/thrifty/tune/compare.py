"""Strategies compared over seeds, as the tuning plan measures them.

For each seed every strategy replays the same sampler sequence. The target of that seed is the
best accuracy that random-full reaches with its whole budget, minus `TARGET_MARGIN` (0.5
points): the accuracy a user of plain random search would have settled for. Each strategy's time
and slot-hours to that target are read off its run; speed-ups are per-seed ratios of times to
target, summarised by their median over seeds (0 when a strategy never reached the target).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import median

from thrifty.errors import ThriftyError
from thrifty.tune.curves import CurveSet
from thrifty.tune.simulate import STRATEGIES, SimResult, SimSettings, Strategy, simulate
from thrifty.tune.speedup import SpeedupTable

TARGET_MARGIN = 0.005


@dataclass(frozen=True)
class Summary:
    """One strategy over all seeds: medians, and speed-ups (None where the baseline was not
    run)."""

    strategy: Strategy
    runs: tuple[SimResult, ...]
    time_to_target_s: float
    slot_hours_to_target: float
    total_slot_hours: float
    best: float
    started: float
    pruned: float
    completed: float
    reached: int  # seeds whose run reached the target
    vs_random: float | None
    vs_asha: float | None


@dataclass(frozen=True)
class Comparison:
    model: str
    settings: SimSettings
    seeds: tuple[int, ...]
    targets: tuple[float, ...]
    summaries: tuple[Summary, ...]


def parse_strategies(text: str) -> list[Strategy]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in STRATEGIES]
    if bad or not names:
        raise ThriftyError(f"--strategies: unknown {', '.join(bad) or '(none given)'}; "
                           f"use a comma-separated list of {', '.join(STRATEGIES)}")
    return list(dict.fromkeys(names))  # type: ignore[arg-type]


def _ratio(base: SimResult, other: SimResult, target: float) -> float:
    base_s, other_s = base.to_target(target)[0], other.to_target(target)[0]
    if math.isinf(other_s):
        return 0.0
    return math.inf if other_s == 0 else base_s / other_s


def compare(
    source: CurveSet,
    settings: SimSettings,
    seeds: Sequence[int],
    strategies: Sequence[Strategy] = STRATEGIES,
    progress: Callable[[str], None] | None = None,
    margin: float = TARGET_MARGIN,
) -> Comparison:
    """Run every strategy (and random-full, which sets the targets: its best minus `margin`)
    for every seed."""
    if not seeds:
        raise ThriftyError("give at least one seed")
    speedups = SpeedupTable(source, settings.model)
    needed = list(dict.fromkeys(["random-full", *strategies]))
    runs: dict[str, list[SimResult]] = {s: [] for s in needed}
    for seed in seeds:
        for strategy in needed:
            if progress:
                progress(f"{settings.model} {strategy} seed {seed}")
            runs[strategy].append(simulate(source, strategy, replace(settings, seed=seed),
                                           speedups))
    targets = tuple(r.best - margin for r in runs["random-full"])
    summaries = tuple(_summary(s, runs, targets) for s in strategies)
    return Comparison(settings.model, settings, tuple(seeds), targets, summaries)


def _summary(strategy: Strategy, runs: dict[str, list[SimResult]],
             targets: tuple[float, ...]) -> Summary:
    mine = runs[strategy]
    reached = [r.to_target(t) for r, t in zip(mine, targets, strict=True)]

    def against(base: str) -> float | None:
        if base not in runs:
            return None
        return median(_ratio(b, r, t) for b, r, t in zip(runs[base], mine, targets,
                                                          strict=True))

    return Summary(
        strategy=strategy, runs=tuple(mine),
        time_to_target_s=median(s for s, _ in reached),
        slot_hours_to_target=median(h for _, h in reached),
        total_slot_hours=median(r.total_slot_hours for r in mine),
        best=median(r.best for r in mine),
        started=median(r.started for r in mine), pruned=median(r.pruned for r in mine),
        completed=median(r.completed for r in mine),
        reached=sum(1 for s, _ in reached if math.isfinite(s)),
        vs_random=against("random-full"), vs_asha=against("asha-fixed"),
    )

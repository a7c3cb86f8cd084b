"""Simulated sweeps from recorded learning curves: random-full, asha-fixed and thrifty side by side.

For every model in the curves file, the same comparison as `thrifty tune simulate`: each seed's
target is the best accuracy random-full reaches with its whole budget minus 0.5 points; per
strategy the medians over seeds of time and slot-hours to that target, and the median per-seed
speed-ups of asha-fixed and thrifty against random-full and of thrifty against asha-fixed, all
measured in this one run. A second table shows the fitted replica speed-up per model (why
thrifty's allocation helps a model or not).

    python benchmarks/tune_simulate.py                                  # shipped curves
    python benchmarks/tune_simulate.py --curves tests/tune/fixtures/small_curves.csv
    python benchmarks/tune_simulate.py --slots 64 --trials 512 --seeds 7 --rung-weight 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import optuna
from rich.table import Table

from thrifty.cli.output import results_console
from thrifty.errors import ThriftyError
from thrifty.tune.compare import TARGET_MARGIN, Comparison, compare
from thrifty.tune.curves import load_curves
from thrifty.tune.simulate import STRATEGIES, SimSettings
from thrifty.tune.speedup import SpeedupTable


def _x(value: float | None) -> str:
    if value is None:
        return "–"
    return "∞" if math.isinf(value) else f"{value:.2f}×"


def _n(value: float, digits: int = 1) -> str:
    return "never" if math.isinf(value) else f"{value:.{digits}f}"


def ratios_table(comparisons: list[Comparison]) -> Table:
    table = Table(title="random-full, asha-fixed, thrifty: time and slot-hours to target "
                        "(medians over seeds), speed-ups (median per-seed ratios)")
    for name in ("model", "target", "random s", "asha s", "thrifty s", "random slot-h",
                 "asha slot-h", "thrifty slot-h", "asha vs random", "thrifty vs random",
                 "thrifty vs asha", "total slot-h r/a/t", "reached r/a/t"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for c in comparisons:
        by = {s.strategy: s for s in c.summaries}
        r, a, t = by["random-full"], by["asha-fixed"], by["thrifty"]
        table.add_row(
            c.model, f"{sorted(c.targets)[len(c.targets) // 2]:.4f}",
            _n(r.time_to_target_s), _n(a.time_to_target_s), _n(t.time_to_target_s),
            _n(r.slot_hours_to_target, 3), _n(a.slot_hours_to_target, 3),
            _n(t.slot_hours_to_target, 3),
            _x(a.vs_random), _x(t.vs_random), _x(t.vs_asha),
            "/".join(f"{s.total_slot_hours:.3g}" for s in (r, a, t)),
            f"{r.reached}/{a.reached}/{t.reached}",
        )
    return table


def speedup_table(source, models: list[str], slots: int) -> Table:
    table = Table(title="Replica speed-up fitted per (model, width): goodput throughput model")
    for name in ("model", "width", "α_c ms/step", "β_c ms/sample", "batch", "useful replicas",
                 "speed-up there"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for model in models:
        fitted = SpeedupTable(source, model)
        batches = sorted({c.batch_size for c in source.configs(model)})
        for width, speed in sorted(fitted.models.items()):
            for batch in batches:
                k = speed.useful_replicas(batch, slots)
                table.add_row(model, str(width), f"{speed.params.alpha_c * 1e3:.3f}",
                              f"{speed.params.beta_c * 1e3:.4f}", str(batch), str(k),
                              f"{speed.speedup(k, batch):.2f}×")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curves", type=Path, default=None,
                        help="learning-curve CSV (default: the shipped curves)")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--grace-epochs", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--rung-weight", type=float, default=1.0)
    parser.add_argument("--restart-s", type=float, default=5.0)
    parser.add_argument("--margin", type=float, default=TARGET_MARGIN,
                        help="target = random-full's best minus this (default 0.005)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = results_console()
    console.width = max(console.width, 200)
    try:
        source = load_curves(args.curves)
        comparisons = []
        started = time.perf_counter()
        for model in source.models():
            settings = SimSettings(model=model, slots=args.slots, trials=args.trials,
                                   grace_epochs=args.grace_epochs,
                                   reduction_factor=args.reduction_factor,
                                   rung_weight=args.rung_weight, restart_s=args.restart_s)
            comparisons.append(compare(source, settings, list(range(args.seeds)), STRATEGIES,
                                       margin=args.margin))
    except ThriftyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    console.print(f"curves {args.curves or 'shipped'}: {args.slots} slots, {args.trials} trials, "
                  f"{args.seeds} seeds, ASHA grace {args.grace_epochs} η {args.reduction_factor}"
                  f", rung weight {args.rung_weight:g}, restart {args.restart_s:g} s, margin "
                  f"{args.margin:g} "
                  f"({time.perf_counter() - started:.0f} s of simulation)")
    console.print(ratios_table(comparisons))
    console.print(speedup_table(source, source.models(), args.slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())

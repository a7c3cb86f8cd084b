"""`thrifty tune`: sweeps of trials; `simulate` replays them from recorded learning curves,
`validate` checks a sweep file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from thrifty.cli.output import fail, fmt_metric, interrupted, results_console
from thrifty.errors import ThriftyError

tune_app = typer.Typer(
    help="Hyperparameter sweeps stopped early: simulate them, validate their specs.",
    no_args_is_help=True,
)

def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return "∞" if math.isinf(value) else f"{value:.2f}×"


def _hours(value: float) -> str:
    return "never" if math.isinf(value) else fmt_metric(value)


def comparison_table(comparison) -> Table:  # a thrifty.tune.compare.Comparison
    """One row per strategy: medians over seeds, and speed-ups in time to target."""
    settings = comparison.settings
    targets = ", ".join(f"{t:.3f}" for t in comparison.targets)
    table = Table(title=f"{comparison.model}: {settings.slots} slots, {settings.trials} trials, "
                        f"{len(comparison.seeds)} seeds (targets {targets})")
    for name in ("strategy", "time to target (s)", "slot-h to target", "slot-h total",
                 "best", "started", "pruned", "completed", "reached",
                 "speed-up vs random-full", "speed-up vs asha-fixed"):
        table.add_column(name, justify="left" if name == "strategy" else "right")
    for s in comparison.summaries:
        table.add_row(
            s.strategy, _hours(s.time_to_target_s), _hours(s.slot_hours_to_target),
            fmt_metric(s.total_slot_hours), f"{s.best:.4f}", f"{s.started:g}",
            f"{s.pruned:g}", f"{s.completed:g}", f"{s.reached}/{len(s.runs)}",
            _ratio(s.vs_random), _ratio(s.vs_asha),
        )
    return table


@tune_app.command("simulate")
def tune_simulate(
    curves: Annotated[
        Path | None,
        typer.Option(help="Learning-curve CSV (default: the curves shipped with thrifty).",
                     show_default=False),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Model whose curves to replay; repeat for several (default: all).",
                     show_default=False),
    ] = None,
    slots: Annotated[int, typer.Option(help="Simulated slots (one CPU thread or GPU each).")]
    = 64,
    trials: Annotated[int, typer.Option(help="Trials each sweep may start.")] = 256,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1; medians are taken over them.")] = 5,
    strategies: Annotated[
        str, typer.Option(help="Comma-separated: random-full, asha-fixed, thrifty.")
    ] = "random-full,asha-fixed,thrifty",
    grace_epochs: Annotated[int, typer.Option(help="ASHA's first rung, in epochs.")] = 1,
    reduction_factor: Annotated[int, typer.Option(help="ASHA's η: keep the top 1/η.")] = 3,
    rung_weight: Annotated[
        float, typer.Option(help="thrifty: a trial one rung higher gets this many times the "
                            "share of idle slots.")
    ] = 1.0,
    restart_s: Annotated[
        float, typer.Option(help="thrifty: seconds a trial pauses when it is resized.")
    ] = 5.0,
    margin: Annotated[
        float, typer.Option(help="Target: the best accuracy random-full reaches, minus this.")
    ] = 0.005,
) -> None:
    """Replay sweeps on simulated slots and compare the strategies' time to target."""
    import optuna

    from thrifty.tune.compare import compare, parse_strategies
    from thrifty.tune.curves import load_curves
    from thrifty.tune.simulate import SimSettings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        chosen = parse_strategies(strategies)
        for flag, value in (("--slots", slots), ("--trials", trials), ("--seeds", seeds)):
            if value < 1:
                raise ThriftyError(f"{flag} must be at least 1, got {value}")
        source = load_curves(curves)  # the shipped recording when no --curves
        models = model or source.models()
        unknown = [name for name in models if not source.configs(name)]
        if unknown:
            raise ThriftyError(f"--model: no curves for {', '.join(unknown)}; recorded: "
                               f"{', '.join(source.models())}")
        console = results_console()
        for name in models:
            settings = SimSettings(model=name, slots=slots, trials=trials,
                                   grace_epochs=grace_epochs,
                                   reduction_factor=reduction_factor, rung_weight=rung_weight,
                                   restart_s=restart_s)
            comparison = compare(source, settings, list(range(seeds)), chosen, margin=margin)
            console.print(comparison_table(comparison))
    except ThriftyError as err:
        fail(err)
    except KeyboardInterrupt:
        interrupted()


@tune_app.command("validate")
def tune_validate(
    sweep: Annotated[Path, typer.Argument(help="Sweep spec, YAML or JSON.", show_default=False)],
) -> None:
    """Check a sweep spec: print every problem with its field, or "ok"."""
    from thrifty.tune.spec import SweepSpecError, load_sweep

    try:
        load_sweep(sweep)
    except SweepSpecError as err:
        for path, message in err.problems:
            typer.echo(f"{path}: {message}", err=True)
        raise typer.Exit(2) from None
    except ThriftyError as err:
        fail(err)
    typer.echo("ok")


def register(app: typer.Typer) -> None:
    app.add_typer(tune_app, name="tune")

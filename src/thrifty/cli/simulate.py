"""`thrifty simulate`: every policy on every workload, in parallel, compared in one table.

The command only checks its options, asks `thrifty.sim.batch` to plan and run the pairs, and
prints; the benchmarks call the same `plan_runs` and `run_pairs`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from thrifty.cli.accounting import (
    baseline_rows,
    ledger_payload,
    shift_rows,
    with_baseline,
)
from thrifty.cli.options import (
    DataOpt,
    IntervalOpt,
    PolicyOpt,
    check_folder,
    cluster_option,
    json_option,
    resolve_data,
    workers_option,
)
from thrifty.cli.output import (
    EXIT_RUN_FAILED,
    fail,
    interrupted,
    report_failures,
    results_console,
)
from thrifty.cli.tables import baseline_table, results_table, shift_table
from thrifty.errors import ThriftyError
from thrifty.policy.registry import POLICIES
from thrifty.sim.batch import (
    Outcome,
    Pair,
    check_policy,
    json_number,
    json_rows,
    plan_runs,
    run_pairs,
)
from thrifty.sim.cluster import load_cluster
from thrifty.sim.generate import parse_duration


def parse_policies(text: str | Iterable[str]) -> list[str]:
    """Comma-separated policy names, in order, without duplicates; each must import."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(p.strip() for p in items if p.strip()))
    if not names:
        raise ThriftyError(f"--policy names no policy (known: {', '.join(POLICIES)})")
    for name in names:
        check_policy(name)
    return names


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise ThriftyError(f"--workers must be at least 1, got {workers}")


def run_and_show(pairs: Sequence[Pair], workers: int | None, title: str) -> list[Outcome]:
    """Run the pairs with progress bars, then print the results of those that succeeded."""
    try:
        outcomes = run_pairs(pairs, workers)
    except KeyboardInterrupt:
        interrupted()
    if any(o.summary is not None for o in outcomes):
        out = results_console()
        out.print(results_table(outcomes, title=title, width=out.width))
    return outcomes


def simulate(
    workloads: Annotated[
        list[Path],
        typer.Argument(
            help="Workload CSV files (name,time,application,num_replicas,batch_size) or folders "
            "of them.",
            show_default=False,
        ),
    ],
    cluster: Annotated[str, cluster_option()],
    policy: PolicyOpt = "thrifty",
    interval: IntervalOpt = 60.0,
    restart_delay: Annotated[
        float | None,
        typer.Option(
            help="Seconds lost per re-allocation for every job (default: the cluster's own).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for randomised policies.")] = 0,
    load: Annotated[
        float, typer.Option(help="Relative job load: jobs arrive this many times as fast.")
    ] = 1.0,
    json_path: Annotated[
        Path | None, json_option("Also write the results as JSON to this file.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw JCT CDFs and GPUs in use over time per policy to this image "
            "(format by suffix: .png, .pdf, .svg).",
            show_default=False,
        ),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(help="Price sheet TOML (default: built-in rates per GPU kind; a node's own "
                     "price_per_hour wins).", show_default=False),
    ] = None,
    carbon: Annotated[
        str | None,
        typer.Option(help="Grid carbon intensity: a region with a series in the data folder "
                     "(ger, fr, gb), a CSV, or gCO2/kWh (default: the price sheet's region).",
                     show_default=False),
    ] = None,
    carbon_slack: Annotated[
        str | None,
        typer.Option(help="Carbon-aware start times: every job may finish this much later than "
                     "if started at once (seconds or 6h, 1d) and waits for the greenest hours "
                     "of --carbon that allow it; a workload's deadline column wins.",
                     show_default=False),
    ] = None,
    budgets: Annotated[
        Path | None,
        typer.Option(help="Budget TOML: per team/user monthly caps enforced while simulating.",
                     show_default=False),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option("--ledger", help="Also write every run's ledger (per job: GPU-hours, USD, "
                     "kWh, kg CO2e) as JSON, for thrifty report.", show_default=False),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="Also run this policy (e.g. fifo) and report GPU-hours, USD, kWh and "
                     "kg CO2e per job of every policy as ratios to it.", show_default=False),
    ] = None,
    autoscale: Annotated[
        bool,
        typer.Option(help="Rent the cluster's nodes from a cloud as the jobs' goodput makes them "
                     "worth it (the cluster file's \\[autoscale] table, else the defaults), "
                     "instead of holding them all; node-h and held USD show the bill."),
    ] = False,
    workers: Annotated[int | None, workers_option()] = None,
    data: DataOpt = None,
) -> None:
    """Simulate every policy on every workload, in parallel, and compare them in one table."""
    try:
        check_workers(workers)
        if baseline is not None:
            check_policy(baseline, seed)
        check_folder(json_path, "--json")
        check_folder(ledger, "--ledger")
        if plot is not None:
            from thrifty.sim.plots import check_plot_path

            check_folder(plot, "--plot")
            check_plot_path(plot)
        pairs = plan_runs(
            workloads,
            cluster,
            with_baseline(parse_policies(policy), baseline),
            resolve_data(data),
            seed=seed,
            interval_s=interval,
            restart_delay_s=restart_delay,
            load=load,
            prices=prices,
            carbon=carbon,
            budgets=budgets,
            keep_ledger=ledger is not None,
            autoscale=autoscale,
            carbon_slack=None if carbon_slack is None else parse_duration(
                carbon_slack, "--carbon-slack"),
        )
    except ThriftyError as err:
        fail(err)
    scaled = " (autoscaled)" if autoscale else ""
    outcomes = run_and_show(pairs, workers, title=f"{cluster}{scaled}: {len(pairs)} simulations")
    shifted = shift_rows(outcomes)
    if shifted:
        results_console().print(shift_table(shifted))
    ratios = baseline_rows(outcomes, baseline) if baseline is not None else []
    if ratios:
        results_console().print(baseline_table(ratios, str(baseline)))
    if ledger is not None:
        ledger.write_text(json.dumps(ledger_payload(outcomes), default=json_number) + "\n")
    if json_path is not None:
        payload: dict[str, Any] = {"runs": json_rows(outcomes)}
        if shifted:
            payload["carbon_shift"] = shifted
        if baseline is not None:
            payload["vs_baseline"] = [
                {k: json_number(v) for k, v in row.items()} for row in ratios
            ]
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
    if plot is not None:
        write_plot(outcomes, plot, cluster)
    if report_failures(outcomes):
        raise typer.Exit(EXIT_RUN_FAILED)


def write_plot(outcomes: Sequence[Outcome], path: Path, cluster: str) -> bool:
    """Draw the successful pairs into one comparison figure; False when none succeeded."""
    from thrifty.sim.plots import PlotRun, save_comparison

    runs = [
        PlotRun(o.pair.spec.policy, o.pair.label, o.summary.jcts_s, o.summary.gpus_in_use)
        for o in outcomes
        if o.summary is not None
    ]
    if not runs:
        return False
    spec = load_cluster(cluster)
    save_comparison(runs, path, capacity=spec.num_gpus,
                    title=f"{spec.name}: {spec.num_gpus} GPUs")
    return True


def register(app: typer.Typer) -> None:
    app.command()(simulate)

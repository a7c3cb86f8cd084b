"""The `thrifty` command line: simulate policies on workloads, side by side, and a quick demo.

Everything a user can get wrong (a bad workload row, an unknown policy, a missing profile) is
checked before any simulation starts and reported as one line naming the file, line and field,
with exit status 2: a long parallel run should never die half-way on a typo.

The pieces of `thrifty simulate` are public (`plan_runs`, `run_pairs`, `results_table`,
`json_rows`) so that the benchmarks run exactly the code the CLI runs.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue as queue_module
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from thrifty import __version__
from thrifty.accounting.budgets import load_budgets
from thrifty.cli_accounting import (
    baseline_rows,
    baseline_table,
    ledger_payload,
    register,
    shift_rows,
    shift_table,
    with_baseline,
)
from thrifty.cli_cluster import register as register_cluster
from thrifty.cli_output import fail as _fail
from thrifty.cli_output import results_console
from thrifty.errors import ThriftyError
from thrifty.policy.registry import POLICIES, make_policy
from thrifty.settings import Settings
from thrifty.sim.autoscale import Autoscaler
from thrifty.sim.cluster import BUILTIN_CLUSTERS, load_cluster
from thrifty.sim.costing import check_prices, load_tariff, priced_pool
from thrifty.sim.engine import SimSettings
from thrifty.sim.generate import parse_duration
from thrifty.sim.metrics import Summary
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.runner import RunSpec, run
from thrifty.sim.workload import load_workload, scale_load, workload_files

app = typer.Typer(
    name="thrifty",
    help="Cheaper deep-learning compute: goodput scheduling, simulation and accounting.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_RUN_FAILED = 1  # a simulation failed after starting (reported per pair)

# The demo: the start of Pollux workload 1 on the Pollux paper's cluster, small enough to finish in
# about a minute on two cores, yet busy enough that the policies differ.
DEMO_POLICIES = ("fifo", "tiresias", "pollux", "thrifty")
DEMO_WORKLOAD = Path("pollux") / "workloads" / "workload-1.csv"
DEMO_CLUSTER = "pollux64"
DEMO_JOBS = 40


# --------------------------------------------------------------------------------------------
# Planning: every input checked before anything runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One (policy, workload) simulation to run, with what the progress bar needs to know."""

    spec: RunSpec
    label: str  # the workload's name in tables and JSON: the file's stem
    jobs: int  # jobs in the workload, the progress bar's total


@dataclass(frozen=True)
class Outcome:
    """What came back from one pair: a summary, or the one-line reason it failed."""

    pair: Pair
    summary: Summary | None
    error: str | None
    run_s: float  # wall seconds of the whole run in its worker (profiles, simulation, metrics)
    cpu_s: float = 0.0  # CPU seconds of the same: what the run costs on an otherwise busy machine


def resolve_data(data: Path | None) -> Path:
    """The measured-data folder: `--data` if given, else `THRIFTY_DATA` or `shared/data` nearby."""
    if data is None:
        return Settings.from_env().require_data()
    if not (data / "pollux").is_dir():
        raise ThriftyError(
            f"{data}: --data must be the folder holding pollux/ (and sia/) profiles, "
            "usually shared/data"
        )
    return data


def parse_policies(text: str | Iterable[str]) -> list[str]:
    """Comma-separated policy names, in order, without duplicates; each must import."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(p.strip() for p in items if p.strip()))
    if not names:
        raise ThriftyError(f"--policy names no policy (known: {', '.join(POLICIES)})")
    for name in names:
        check_policy(name)
    return names


def check_policy(name: str, seed: int = 0) -> None:
    """Build the policy once so that a missing or broken module fails now, not in a worker."""
    try:
        make_policy(name, seed=seed)
    except ThriftyError:
        raise
    except ImportError as err:
        raise ThriftyError(
            f"policy '{name}' is registered but cannot be imported ({err}); "
            "reinstall thrifty or choose another --policy"
        ) from None


def plan_runs(
    workloads: Sequence[str | Path],
    cluster: str,
    policies: Sequence[str],
    data_root: Path,
    *,
    seed: int = 0,
    interval: float = 60.0,
    restart_delay: float | None = None,
    load: float = 1.0,
    prices: Path | None = None,
    carbon: str | None = None,
    budgets: Path | None = None,
    keep_ledger: bool = False,
    autoscale: bool = False,
    carbon_slack: float | None = None,
) -> list[Pair]:
    """Validate every input and return the pairs to run, workload-major.

    Loads the cluster, every workload (with the applications the profiles know), and the profile
    of every application used on every GPU kind of the cluster, so that each error surfaces here,
    in the parent, as one `ThriftyError` naming the file, line and field.
    """
    SimSettings(interval=interval, restart_delay=restart_delay)  # checks both values
    spec_cluster = load_cluster(cluster)
    profiles = ProfileSet(data_root, spec_cluster.profiles)
    applications = profiles.applications
    if not applications:
        raise ThriftyError(
            f"{data_root / spec_cluster.profiles / 'profiles'}: no application profiles found; "
            "check --data"
        )
    files = workload_files(workloads)
    if not files:
        raise ThriftyError("no workload given: pass one or more CSV files or folders")
    loaded = []
    for path in files:
        workload = load_workload(path, applications)
        if load != 1.0:
            workload = scale_load(workload, load)
        loaded.append((path, workload))
    for app_name in sorted({j.application for _, w in loaded for j in w.jobs}):
        profiles.get(app_name, spec_cluster.kinds)
    names = list(policies)
    for name in names:
        check_policy(name, seed)
    tariff = load_tariff(data_root, spec_cluster.kinds, prices, carbon)  # prices every node now
    check_prices(tariff, spec_cluster.nodes)
    if autoscale:  # the cluster's [autoscale] table against its priced nodes
        Autoscaler(priced_pool(spec_cluster, tariff), spec_cluster.autoscale)
    if budgets is not None:
        load_budgets(budgets)
    return [
        Pair(
            spec=RunSpec(
                policy=name,
                workload=path,
                cluster=cluster,
                data_root=data_root,
                seed=seed,
                interval=interval,
                restart_delay=restart_delay,
                load=load,
                prices=prices,
                carbon=carbon,
                budgets=budgets,
                keep_ledger=keep_ledger,
                autoscale=autoscale,
                carbon_slack=carbon_slack,
            ),
            label=path.stem,
            jobs=len(workload.jobs),
        )
        for path, workload in loaded
        for name in names
    ]


# --------------------------------------------------------------------------------------------
# Running: one process per pair, progress fed back through a managed queue
# --------------------------------------------------------------------------------------------


def _run_in_worker(index: int, spec: RunSpec, updates: Any) -> tuple[Summary, float, float]:
    """Run one pair in a pool process, sending (index, done, total) whenever a job finishes.

    A `ThriftyError` is re-raised as the plain base class: subclasses such as `InputError` take
    extra constructor arguments and would not survive pickling back to the parent.
    """
    last = -1

    def on_round(done: int, total: int) -> None:
        nonlocal last
        if done != last:
            last = done
            updates.put((index, done, total))

    started, cpu = time.perf_counter(), time.process_time()
    try:
        summary = run(spec, on_round=on_round)
    except ThriftyError as err:
        raise ThriftyError(str(err)) from None
    return summary, time.perf_counter() - started, time.process_time() - cpu


def default_workers(pairs: int) -> int:
    """One process per pair, at most one per CPU this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(pairs, cpus))


def run_pairs(
    pairs: Sequence[Pair], workers: int | None = None, console: Console | None = None
) -> list[Outcome]:
    """Run every pair in a process pool with one progress bar each; outcomes in `pairs` order.

    A pair that fails does not stop the others: its outcome carries the error instead.
    """
    if not pairs:
        return []
    workers = default_workers(len(pairs)) if workers is None else min(workers, len(pairs))
    console = console or Console(stderr=True)
    outcomes: dict[int, Outcome] = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("jobs"),
        TimeElapsedColumn(),
        console=console,
    )
    labels = [f"{p.spec.policy} · {p.label}" for p in pairs]
    width = max(map(len, labels))
    with multiprocessing.Manager() as manager, progress:
        updates = manager.Queue()
        tasks: list[TaskID] = [
            progress.add_task(label.ljust(width), total=p.jobs)
            for label, p in zip(labels, pairs, strict=True)
        ]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures: dict[Future[tuple[Summary, float, float]], int] = {
                pool.submit(_run_in_worker, i, p.spec, updates): i for i, p in enumerate(pairs)
            }
            pending = set(futures)
            try:
                while pending:
                    _drain(updates, progress, tasks)
                    finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in finished:
                        i = futures[future]
                        outcomes[i] = _outcome(pairs[i], future)
                        if outcomes[i].summary is None:
                            progress.update(tasks[i], description=f"{labels[i]} [red]failed[/]")
                        else:
                            progress.update(tasks[i], completed=pairs[i].jobs)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        _drain(updates, progress, tasks)
        for i, pair in enumerate(pairs):  # bars of finished runs end full, whatever came late
            if outcomes[i].summary is not None:
                progress.update(tasks[i], completed=pair.jobs)
    return [outcomes[i] for i in range(len(pairs))]


def _drain(updates: Any, progress: Progress, tasks: Sequence[TaskID]) -> None:
    while True:
        try:
            index, done, total = updates.get_nowait()
        except queue_module.Empty:
            return
        progress.update(tasks[index], completed=done, total=total)


def _outcome(pair: Pair, future: Future[tuple[Summary, float, float]]) -> Outcome:
    err = future.exception()
    if err is None:
        summary, run_s, cpu_s = future.result()
        return Outcome(pair, summary, None, run_s, cpu_s)
    if isinstance(err, ThriftyError):
        message = str(err)
    else:  # a bug, not bad input: keep the worker's traceback for the report
        message = "".join(traceback.format_exception(err)).rstrip()
    return Outcome(pair, None, message, 0.0)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str, float], ...] = (
    # (header, Summary attribute, divisor turning it into the shown unit)
    ("avg JCT h", "avg_jct_s", 3600.0),
    ("p50 JCT h", "p50_jct_s", 3600.0),
    ("p99 JCT h", "p99_jct_s", 3600.0),
    ("makespan h", "makespan_s", 3600.0),
    ("GPU-h", "gpu_hours", 1.0),
    ("USD", "usd", 1.0),
    ("kWh", "kwh", 1.0),
    ("kg CO2e", "kgco2e", 1.0),
    ("restarts /job", "restarts_per_job", 1.0),
    ("worst FTF", "worst_ftf", 1.0),
    ("round med ms", "policy_round_median_s", 1e-3),
    ("round p95 ms", "policy_round_p95_s", 1e-3),
    ("wall s", "wall_s", 1.0),
)


def _fmt(value: float) -> str:
    """About three significant figures, without switching to exponents for small values."""
    if not math.isfinite(value):
        return "–"
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.01 or size == 0:
        return f"{value:.2f}"
    return f"{value:.1g}"


# With --autoscale, what renting the nodes cost: node-hours held and their USD (every run's JSON
# has both; the table shows them only then, to stay narrow).
_CLOUD_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("node-h", "node_hours", 1.0),
    ("held USD", "held_usd", 1.0),
)


def _columns(outcomes: Sequence[Outcome]) -> tuple[tuple[str, str, float], ...]:
    if any(o.pair.spec.autoscale for o in outcomes):
        at = [attr for _, attr, _ in _COLUMNS].index("usd") + 1
        return _COLUMNS[:at] + _CLOUD_COLUMNS + _COLUMNS[at:]
    return _COLUMNS


def _values(summary: Summary, columns: Sequence[tuple[str, str, float]] = _COLUMNS
            ) -> list[float]:
    return [float(getattr(summary, attr)) / div for _, attr, div in columns]


def results_table(outcomes: Sequence[Outcome], title: str | None = None) -> Table:
    """Rows workload × policy, then (with several workloads) the mean per policy."""
    table = Table(title=title, header_style="bold")
    table.add_column("workload")
    table.add_column("policy")
    columns = _columns(outcomes)
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    done = [o for o in outcomes if o.summary is not None]
    for outcome in done:
        assert outcome.summary is not None
        table.add_row(
            outcome.pair.label, outcome.pair.spec.policy,
            *map(_fmt, _values(outcome.summary, columns)),
        )
    workloads = {o.pair.spec.workload for o in done}
    if len(workloads) > 1:
        by_policy: dict[str, list[list[float]]] = {}
        for outcome in done:
            assert outcome.summary is not None
            by_policy.setdefault(outcome.pair.spec.policy, []).append(
                _values(outcome.summary, columns))
        table.add_section()
        for policy, rows in by_policy.items():
            means = [math.fsum(column) / len(column) for column in zip(*rows, strict=True)]
            table.add_row(f"mean of {len(rows)}", policy, *map(_fmt, means), style="bold")
    return table


def _json_number(value: Any) -> Any:
    """JSON has no NaN: an undefined figure (e.g. no fair-share time) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One record per successful pair: `Summary.row()` with the workload as the file's stem."""
    rows = []
    for outcome in outcomes:
        if outcome.summary is None:
            continue
        spec = outcome.pair.spec
        row = {key: _json_number(value) for key, value in outcome.summary.row().items()}
        row.update(
            workload=outcome.pair.label,
            path=str(spec.workload),
            cluster=spec.cluster,
            seed=spec.seed,
            interval_s=spec.interval,
            restart_delay_s=spec.restart_delay,
            load=spec.load,
            run_s=outcome.run_s,
            cpu_s=outcome.cpu_s,
        )
        rows.append(row)
    return rows


def _report_failures(outcomes: Sequence[Outcome]) -> bool:
    failed = [o for o in outcomes if o.error is not None]
    for outcome in failed:
        sys.stderr.write(
            f"error: {outcome.pair.spec.policy} on {outcome.pair.label}: {outcome.error}\n"
        )
    return bool(failed)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"thrifty {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Cheaper deep-learning compute: goodput scheduling, simulation and accounting."""


@app.command()
def simulate(
    workloads: Annotated[
        list[Path],
        typer.Argument(
            help="Workload CSV files (name,time,application,num_replicas,batch_size) or folders "
            "of them.",
            show_default=False,
        ),
    ],
    cluster: Annotated[
        str,
        typer.Option(
            "--cluster",
            "-c",
            help=f"Built-in cluster ({', '.join(BUILTIN_CLUSTERS)}) or a cluster TOML file.",
            show_default=False,
        ),
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            "-p",
            help=f"Comma-separated policies to compare ({', '.join(POLICIES)}).",
        ),
    ] = "thrifty",
    interval: Annotated[
        float, typer.Option(help="Seconds between scheduling rounds.")
    ] = 60.0,
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
        Path | None,
        typer.Option("--json", help="Also write the results as JSON to this file.",
                     show_default=False),
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
                     "worth it (the cluster file's [autoscale] table, else the defaults), "
                     "instead of holding them all; node-h and held USD show the bill."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Parallel processes (default: one per pair, at most one per CPU).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Folder of measured profiles (default: $THRIFTY_DATA or shared/data nearby).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Simulate every policy on every workload, in parallel, and compare them in one table."""
    try:
        if workers is not None and workers < 1:
            raise ThriftyError(f"--workers must be at least 1, got {workers}")
        if json_path is not None and not json_path.parent.is_dir():
            raise ThriftyError(f"{json_path}: --json folder {json_path.parent} does not exist")
        if ledger is not None and not ledger.parent.is_dir():
            raise ThriftyError(f"{ledger}: --ledger folder {ledger.parent} does not exist")
        if baseline is not None:
            check_policy(baseline, seed)
        if plot is not None:
            from thrifty.sim.plots import check_plot_path

            check_plot_path(plot)
        pairs = plan_runs(
            workloads,
            cluster,
            with_baseline(parse_policies(policy), baseline),
            resolve_data(data),
            seed=seed,
            interval=interval,
            restart_delay=restart_delay,
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
        _fail(err)
    scaled = " (autoscaled)" if autoscale else ""
    outcomes = _run_and_show(pairs, workers, title=f"{cluster}{scaled}: {len(pairs)} simulations")
    shifted = shift_rows(outcomes)
    if shifted:
        results_console().print(shift_table(shifted))
    ratios = baseline_rows(outcomes, baseline) if baseline is not None else []
    if ratios:
        results_console().print(baseline_table(ratios, str(baseline)))
    if ledger is not None:
        ledger.write_text(json.dumps(ledger_payload(outcomes), default=_json_number) + "\n")
    if json_path is not None:
        payload: dict[str, Any] = {"runs": json_rows(outcomes)}
        if shifted:
            payload["carbon_shift"] = shifted
        if baseline is not None:
            payload["vs_baseline"] = [
                {k: _json_number(v) for k, v in row.items()} for row in ratios
            ]
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
    if plot is not None:
        write_plot(outcomes, plot, cluster)
    if _report_failures(outcomes):
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


def _run_and_show(pairs: Sequence[Pair], workers: int | None, title: str) -> list[Outcome]:
    try:
        outcomes = run_pairs(pairs, workers)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130) from None
    if any(o.summary is not None for o in outcomes):
        results_console().print(results_table(outcomes, title=title))
    return outcomes


@app.command()
def demo(
    simulate: Annotated[
        bool,
        typer.Option("--simulate", help="Instead: simulate the first jobs of Pollux workload 1 "
                     "on 64 T4 GPUs under several policies."),
    ] = False,
    policy: Annotated[str, typer.Option(help="Scheduling policy of the live demo.")] = "thrifty",
    slots: Annotated[
        int | None,
        typer.Option(help="CPU slots of the live demo (default: one per core).",
                     show_default=False),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between scheduling rounds.")] = 5.0,
    jobs: Annotated[int, typer.Option(help="--simulate: how many first jobs.")] = (
        DEMO_JOBS
    ),
    workers: Annotated[
        int | None,
        typer.Option(help="--simulate: parallel processes (default: one per policy, at most one "
                     "per CPU).", show_default=False),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="--simulate: folder of measured profiles (default: $THRIFTY_DATA or "
                     "shared/data nearby).", show_default=False),
    ] = None,
) -> None:
    """Four real training jobs on the embedded control plane, resized live by the policy."""
    if simulate:
        run_demo(jobs=jobs, workers=workers, data=data)
        return
    from thrifty.cluster.demo import run_live_demo
    from thrifty.cluster.store import thrifty_home

    try:
        rows = run_live_demo(thrifty_home() / "demo", policy=policy, slots=slots,
                             interval_s=interval, console=results_console())
    except ThriftyError as err:
        _fail(err)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130) from None
    if any(row["state"] != "succeeded" for row in rows):
        raise typer.Exit(EXIT_RUN_FAILED)


def available_policies(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split `names` into those that are registered and build, and those that do not (yet)."""
    ok, skipped = [], []
    for name in names:
        try:
            check_policy(name)
        except Exception:  # the demo shows what works and names the rest
            skipped.append(name)
        else:
            ok.append(name)
    return ok, skipped


def run_demo(jobs: int = DEMO_JOBS, workers: int | None = None, data: Path | None = None) -> None:
    """Simulate the demo workload under the demo policies that are available, and show the table."""
    out = results_console()
    try:
        if jobs < 1:
            raise ThriftyError(f"--jobs must be at least 1, got {jobs}")
        if workers is not None and workers < 1:
            raise ThriftyError(f"--workers must be at least 1, got {workers}")
        root = resolve_data(data)
        policies, skipped = available_policies(DEMO_POLICIES)
        if not policies:
            raise ThriftyError(f"none of the demo policies ({', '.join(DEMO_POLICIES)}) imports")
        source = root / DEMO_WORKLOAD
        if not source.is_file():
            raise ThriftyError(f"{source}: demo workload not found; check --data")
        lines = source.read_text().splitlines()
        with tempfile.TemporaryDirectory(prefix="thrifty-demo-") as folder:
            path = Path(folder) / f"{source.stem}-first{jobs}.csv"
            path.write_text("\n".join(lines[: jobs + 1]) + "\n")
            pairs = plan_runs([path], DEMO_CLUSTER, policies, root)
            count = pairs[0].jobs
            out.print(
                f"[bold]thrifty demo[/]: the first {count} jobs of Pollux workload 1 "
                f"(Microsoft Philly trace) on {DEMO_CLUSTER}, 16 nodes × 4 NVIDIA T4, "
                f"under {', '.join(policies)}."
            )
            if skipped:
                out.print(f"[dim](not available in this install: {', '.join(skipped)})[/]")
            started = time.perf_counter()
            outcomes = _run_and_show(pairs, workers, title=f"{DEMO_CLUSTER}: {count} jobs")
    except ThriftyError as err:
        _fail(err)
    out.print(
        f"Done in {time.perf_counter() - started:.0f} s. JCT: job completion time; FTF: "
        "finish-time fairness, a job's time over its time on an equal share of the cluster."
    )
    out.print(
        f"Next, all five Pollux workloads: [bold]thrifty simulate {root / 'pollux' / 'workloads'} "
        f"--cluster pollux64 --policy {','.join(policies)}[/]"
    )
    if _report_failures(outcomes):
        raise typer.Exit(EXIT_RUN_FAILED)


# --------------------------------------------------------------------------------------------
# thrifty workload: larger workloads and clusters sampled from measured ones
# --------------------------------------------------------------------------------------------

workload_app = typer.Typer(
    help="Sample larger clusters and workloads from measured ones.", no_args_is_help=True
)
app.add_typer(workload_app, name="workload")
register(app)  # thrifty report, thrifty advise (cli_accounting.py)
register_cluster(app)  # thrifty server, submit, jobs, logs, cancel, cluster, users


@workload_app.command("generate")
def workload_generate(
    bases: Annotated[
        list[Path],
        typer.Argument(help="Base workload CSV files or folders: the jobs and gaps to resample.",
                       show_default=False),
    ],
    cluster: Annotated[
        str,
        typer.Option("--cluster", "-c", show_default=False,
                     help=f"Base cluster ({', '.join(BUILTIN_CLUSTERS)}) or a cluster TOML file."),
    ],
    cluster_out: Annotated[
        Path, typer.Option(help="Where to write the scaled cluster TOML.", show_default=False)
    ],
    workload_out: Annotated[
        Path, typer.Option(help="Where to write the generated workload CSV.", show_default=False)
    ],
    node_scale: Annotated[
        float, typer.Option(help="Nodes of every group of the base cluster × this.")
    ] = 1.0,
    rate_scale: Annotated[
        float | None,
        typer.Option(help="Jobs arrive this many times as fast as in the bases "
                     "(default: the node scale, the same load per GPU).", show_default=False),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="Arrivals span this long: seconds or 30m, 8h, 1d (default: as long "
                     "as the longest base).", show_default=False),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(help="Generate exactly this many jobs instead of a duration.",
                     show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same inputs and seed give the same files.")]
    = 0,
    name: Annotated[
        str | None,
        typer.Option(help="Name of the generated cluster (default: <base>x<node scale>).",
                     show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing output files.")] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of measured profiles, to check the applications (default: "
                     "$THRIFTY_DATA or shared/data nearby).", show_default=False),
    ] = None,
) -> None:
    """Scale a cluster and resample a workload from measured ones, e.g. 32× nodes and arrivals."""
    from thrifty.sim import generate

    try:
        for path, flag in ((cluster_out, "--cluster-out"), (workload_out, "--workload-out")):
            _check_output(path, flag, force)
        base_cluster = load_cluster(cluster)
        applications = ProfileSet(resolve_data(data), base_cluster.profiles).applications
        files = workload_files(bases)
        loaded = [load_workload(path, applications) for path in files]
        scaled = generate.scale_cluster(base_cluster, node_scale, name)
        seconds = None if duration is None else generate.parse_duration(duration)
        workload = generate.generate_workload(
            loaded, rate_scale=node_scale if rate_scale is None else rate_scale,
            duration=seconds, jobs=jobs, seed=seed, name=workload_out.stem,
        )
    except ThriftyError as err:
        _fail(err)
    origin = (f"thrifty workload generate: {base_cluster.name} x {node_scale:g} nodes, "
              f"seed {seed}")
    cluster_out.write_text(generate.cluster_toml(scaled, comment=origin))
    workload_out.write_text(generate.workload_csv(workload))
    rows = generate.comparison(loaded, base_cluster, workload, scaled)
    results_console().print(generate_table(rows))
    sys.stderr.write(f"wrote {cluster_out} and {workload_out}\n")


def _check_output(path: Path, flag: str, force: bool) -> None:
    if not path.parent.is_dir():
        raise ThriftyError(f"{path}: {flag} folder {path.parent} does not exist")
    if path.exists() and not force:
        raise ThriftyError(f"{path}: {flag} exists; pass --force to overwrite it")


def generate_table(rows: Sequence[tuple[str, str, str]]) -> Table:
    """Base against generated, one figure per row."""
    table = Table(title="thrifty workload generate", header_style="bold")
    table.add_column("")
    table.add_column("base", justify="right")
    table.add_column("generated", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


if __name__ == "__main__":
    app()

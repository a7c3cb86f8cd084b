"""`thrifty demo`: four real training jobs resized live, or with `--simulate` the start of a
measured workload under several policies, in about a minute on two cores."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from thrifty.cli.options import IntervalOpt, data_option, resolve_data, workers_option
from thrifty.cli.output import (
    EXIT_RUN_FAILED,
    fail,
    interrupted,
    report_failures,
    results_console,
)
from thrifty.cli.simulate import check_workers, run_and_show
from thrifty.errors import ThriftyError
from thrifty.settings import Settings
from thrifty.sim.batch import check_policy, plan_runs

# The demo: the start of Pollux workload 1 on the Pollux paper's cluster, small enough to finish in
# about a minute on two cores, yet busy enough that the policies differ.
DEMO_POLICIES = ("fifo", "tiresias", "pollux", "thrifty")
DEMO_WORKLOAD = Path("pollux") / "workloads" / "workload-1.csv"
DEMO_CLUSTER = "pollux64"
DEMO_JOBS = 40


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
    interval: IntervalOpt = 5.0,
    jobs: Annotated[int, typer.Option(help="--simulate: how many first jobs.")] = DEMO_JOBS,
    workers: Annotated[
        int | None, workers_option("--simulate: parallel processes", each="policy")
    ] = None,
    data: Annotated[
        Path | None, data_option("--simulate: folder of measured profiles")
    ] = None,
) -> None:
    """Four real training jobs on the embedded control plane, resized live by the policy."""
    if simulate:
        run_demo(jobs=jobs, workers=workers, data=data)
        return
    from thrifty.cluster.demo import run_live_demo

    try:
        settings = Settings.load()
        rows = run_live_demo(settings.home / "demo", policy=policy, slots=slots,
                             interval_s=interval, console=results_console(), settings=settings)
    except ThriftyError as err:
        fail(err)
    except KeyboardInterrupt:
        interrupted()
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
        check_workers(workers)
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
            outcomes = run_and_show(pairs, workers, title=f"{DEMO_CLUSTER}: {count} jobs")
    except ThriftyError as err:
        fail(err)
    out.print(
        f"Done in {time.perf_counter() - started:.0f} s. JCT: job completion time; FTF: "
        "finish-time fairness, a job's time over its time on an equal share of the cluster."
    )
    out.print(
        f"Next, all five Pollux workloads: [bold]thrifty simulate {root / 'pollux' / 'workloads'} "
        f"--cluster pollux64 --policy {','.join(policies)}[/]"
    )
    if report_failures(outcomes):
        raise typer.Exit(EXIT_RUN_FAILED)


def register(app: typer.Typer) -> None:
    app.command()(demo)

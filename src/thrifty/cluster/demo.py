"""`thrifty demo`: the embedded control plane running four real training jobs on this machine.

The jobs are the examples shipped beside the package (digits MLP and CNN, an MNIST-1D CNN and a
tiny transformer language model), submitted at staggered times so that the policy has to share
the CPU slots as jobs come and go, resizing them through checkpoint-restart.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from thrifty.accounting.ledger import Ledger
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.spec import JobSpec, validate_spec
from thrifty.cluster.states import STATE_COLOURS, TERMINAL_STATES
from thrifty.cluster.store import Store
from thrifty.cluster.summary import job_summary
from thrifty.cluster.usage import live_ledger, live_tariff
from thrifty.errors import ThriftyError
from thrifty.settings import Settings


@dataclass(frozen=True)
class DemoJob:
    at_s: float  # submitted this long after the start
    name: str
    script: str
    args: tuple[str, ...]
    work_s: float  # CPU-slot seconds it trains for, then the demo tells it to stop


RESTART_S = 8.0
"""A local resize: checkpoint, exit, start Python and PyTorch again, load (measured: 4-8 s)."""

UNTIL_STOPPED = 1_000_000
"""The epochs each demo job declares: its stop file, not a count of epochs, ends it."""

# Sized by time, not by epochs, so that every machine sees the same story: the first job has
# both slots, is shrunk when the second arrives, the later two wait for a slot, and the last
# ones grow as the others finish. 4 × 75 slot-seconds on 2 slots, with the restarts and the
# waits between rounds: about 3-4 minutes in all.
DEMO_JOBS = (
    DemoJob(0, "digits-mlp", "digits_mlp.py", (), 75.0),
    DemoJob(20, "mnist1d-cnn", "mnist1d_cnn.py", (), 75.0),
    DemoJob(40, "digits-cnn", "digits_cnn.py", (), 75.0),
    DemoJob(60, "tiny-lm", "tiny_lm.py", ("--sentences", "2000"), 75.0))


def examples_folder() -> Path:
    """The examples beside the source tree (the demo runs from a checkout, as the README says)."""
    import thrifty

    folder = Path(thrifty.__file__).resolve().parents[2] / "examples"
    if not (folder / DEMO_JOBS[0].script).is_file():
        raise ThriftyError(
            f"the demo's example jobs are not in {folder}: run `thrifty demo` from an install of "
            "a source checkout (pip install -e '.[examples]')"
        )
    return folder


def demo_specs(examples: Path, stops: Path, max_replicas: int,
               jobs: Sequence[DemoJob] = DEMO_JOBS) -> list[tuple[float, JobSpec]]:
    """(submission time, spec) per demo job; each trains until its file in `stops` exists."""
    return [
        (job.at_s, validate_spec({
            "name": job.name,
            "entrypoint": {"script": str(examples / job.script),
                           "args": [*job.args, "--epochs", str(UNTIL_STOPPED),
                                    "--stop-file", str(stops / job.name)]},
            "working_dir": str(examples),
            "resources": {"min_replicas": 1, "max_replicas": max_replicas},
            "owner": "demo",
            "team": "demo",
        }))
        for job in jobs
    ]


def scaled_jobs(scale: float) -> tuple[DemoJob, ...]:
    """The demo jobs with arrivals and training times × `scale` (a shorter demo: < 1)."""
    if scale <= 0:
        raise ThriftyError(f"the demo's time scale must be positive, got {scale}")
    return tuple(replace(job, at_s=job.at_s * scale, work_s=job.work_s * scale)
                 for job in DEMO_JOBS)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


# Blank column separators and one space of padding: two spaces between columns.
_NARROW = {"title_justify": "left", "box": box.SIMPLE_HEAD, "show_edge": False,
           "padding": (0, 1, 0, 0)}


def _columns(table: Table, headers: Sequence[str]) -> Table:
    """Job and state first, whole on one line (they tell the rows apart), then the figures
    under short two-line headers; no cell is cut short with an ellipsis."""
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right", no_wrap=True,
                         overflow="fold")
    return table


def live_table(rows: Sequence[dict], elapsed: float, policy: str, slots: int) -> Table:
    """What each job does now; fits in an 80-column terminal."""
    table = _columns(
        Table(title=f"thrifty demo · policy {policy} · {slots} CPU slots · {elapsed:.0f} s",
              **_NARROW),
        ("job", "state", "CPU\nslots", "batch", "epoch", "goodput\nsamples/s", "restarts",
         "time\ns"))
    for row in rows:
        state = row["state"]
        table.add_row(
            row["name"], f"[{STATE_COLOURS.get(state, '')}]{state}[/]", str(row["replicas"] or "—"),
            _fmt(row["batch_size"]), _fmt(row["epoch"]), _fmt(row["goodput"]),
            str(row["restarts"]), _fmt(row["jct_s"]),
        )
    return table


def summary_table(rows: Sequence[dict], ledger: Ledger) -> Table:
    """Each job's outcome and its bill (CPU slots at the built-in per-core rate); fits in an
    80-column terminal."""
    bill = {e.job: e for e in ledger.entries}
    table = _columns(
        Table(title=f"Per job (grid: {ledger.meta.get('carbon')})", **_NARROW),
        ("job", "state", "JCT\ns", "restarts", "slot\nhours", "final\nbatch", "USD", "Wh",
         "g\nCO2e"))
    for row in rows:
        entry = bill.get(row["id"])
        cost = ("—", "—", "—") if entry is None else (
            f"{entry.usd:.4f}", f"{entry.kwh * 1000:.1f}", f"{entry.kgco2e * 1000:.1f}")
        table.add_row(row["name"], row["state"], _fmt(row["jct_s"]), str(row["restarts"]),
                      f"{row['replica_seconds'] / 3600:.4f}", _fmt(row["batch_size"]), *cost)
    return table


def run_live_demo(home: Path, policy: str = "thrifty", slots: int | None = None,
                  interval_s: float = 5.0, timeout_s: float = 900.0,
                  console: Console | None = None, settings: Settings | None = None,
                  time_scale: float = 1.0) -> list[dict]:
    """Run the demo jobs to the end in a fresh control plane under `home`; returns summaries.
    Each job trains until it has had its CPU-slot seconds (× `time_scale`, as are the
    arrivals), then the demo creates its stop file. `settings` (loaded here when not given: the
    demo is an entry point) name the GPU kind and the data folder whose board powers usage is
    billed with."""
    console = console or Console()
    settings = settings or Settings.load()
    examples = examples_folder()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    # The demo runs thrifty's own examples on the user's machine, and its jobs watch stop files
    # the demo writes beside them, which a sandbox would hide: it chooses no sandbox, and says so.
    executor = LocalExecutor(slots=slots, gpu_kind=settings.gpu_kind, isolation="none")
    capacity = executor.nodes()[0].num_gpus
    store = Store(f"sqlite:///{home / 'thrifty.db'}")
    plane = ControlPlane(store, executor, policy, interval_s=interval_s, home=home,
                         stop_grace_s=30.0, restart_s=RESTART_S,
                         tariff=live_tariff(data_root=settings.data_root))
    jobs = scaled_jobs(time_scale)
    stops = home / "stop"
    stops.mkdir()
    plan = demo_specs(examples, stops, max_replicas=capacity, jobs=jobs)
    work_s = {job.name: job.work_s for job in jobs}
    console.print(
        f"[bold]thrifty demo[/]: {len(plan)} real training jobs (thrifty.train examples) submitted "
        f"over {plan[-1][0]:.0f} s to the embedded control plane; the {policy} policy shares "
        f"{capacity} CPU slot(s) among them every {interval_s:.0f} s. Jobs run without a "
        "sandbox (isolation none: the demo's own examples)."
    )
    start = time.monotonic()
    submitted: list[str] = []
    plane.start()
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                elapsed = time.monotonic() - start
                while len(submitted) < len(plan) and plan[len(submitted)][0] <= elapsed:
                    submitted.append(plane.submit(plan[len(submitted)][1]).id)
                now = time.time()
                rows = [job_summary(job, now) for job in reversed(store.jobs())]
                for row in rows:  # trained long enough: it ends before its next epoch
                    if row["replica_seconds"] >= work_s.get(row["name"], 0.0):
                        (stops / row["name"]).touch()
                live.update(live_table(rows, elapsed, policy, capacity))
                if len(submitted) == len(plan) and all(r["state"] in TERMINAL_STATES
                                                       for r in rows):
                    break
                if elapsed > timeout_s:
                    raise ThriftyError(f"the demo did not finish within {timeout_s:.0f} s")
                time.sleep(0.5)
    finally:
        plane.stop(stop_jobs=True)
    console.print()  # the live table's last line ends here
    now = time.time()
    rows = [job_summary(job, now) for job in reversed(store.jobs())]
    console.print(summary_table(rows, live_ledger(store, plane.tariff, now, executor.nodes())))
    console.print(f"Finished in {time.monotonic() - start:.0f} s.")
    console.print(f"Database: {home / 'thrifty.db'}")
    console.print(f"Logs:     {home / 'jobs'}/<job>/logs/")
    failed = [r for r in rows if r["state"] != "succeeded"]
    for row in failed:
        console.print(f"[red]{row['name']} {row['state']}[/]: {row['message'][-2000:]}")
    return rows

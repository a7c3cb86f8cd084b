"""Many (policy, workload) simulations at once: plan them, run them in worker processes, collect.

Everything a user can get wrong (a bad workload row, an unknown policy, a missing profile) is
checked by `plan_runs` before any simulation starts, and raised as one `ThriftyError` naming the
file, line and field: a long parallel run should never die half-way on a typo. `run_pairs` then
runs one process per pair and reports each pair's jobs as they finish, so that `thrifty simulate`
and the benchmarks run exactly the same code.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue as queue_module
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from thrifty.accounting.budgets import load_budgets
from thrifty.accounting.tariff import load_tariff
from thrifty.errors import ThriftyError
from thrifty.policy.registry import make_policy
from thrifty.sim.autoscale import Autoscaler
from thrifty.sim.cluster import load_cluster
from thrifty.sim.costing import check_prices, priced_pool
from thrifty.sim.engine import SimSettings
from thrifty.sim.metrics import Summary
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.runner import RunSpec, run
from thrifty.sim.workload import load_workload, scale_load, workload_files

POLL_S = 0.2  # how often the parent looks for finished pairs and progress updates


@dataclass(frozen=True)
class Pair:
    """One (policy, workload) simulation to run, with what the progress bar needs to know."""

    spec: RunSpec
    label: str  # the workload's name in tables and JSON: the file's stem
    jobs: int  # jobs in the workload, the progress bar's total

    @property
    def name(self) -> str:
        """How progress bars name the pair: policy · workload."""
        return f"{self.spec.policy} · {self.label}"


@dataclass(frozen=True)
class Outcome:
    """What came back from one pair: a summary, or the one-line reason it failed."""

    pair: Pair
    summary: Summary | None
    error: str | None
    run_s: float  # wall seconds of the whole run in its worker (profiles, simulation, metrics)
    cpu_s: float = 0.0  # CPU seconds of the same: what the run costs on an otherwise busy machine


class BatchProgress(Protocol):
    """What `run_pairs` tells a display, inside a `with` block around the whole batch."""

    def __enter__(self) -> Any: ...

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any: ...

    def start(self, names: Sequence[str], totals: Sequence[int]) -> None: ...

    def update(self, index: int, done: int, total: int) -> None: ...

    def end(self, index: int, ok: bool) -> None: ...


# --------------------------------------------------------------------------------------------
# Planning: every input checked before anything runs
# --------------------------------------------------------------------------------------------


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
    interval_s: float = 60.0,
    restart_delay_s: float | None = None,
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
    SimSettings(interval_s=interval_s, restart_delay_s=restart_delay_s)  # checks both values
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
                interval_s=interval_s,
                restart_delay_s=restart_delay_s,
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
    pairs: Sequence[Pair], workers: int | None = None, progress: BatchProgress | None = None
) -> list[Outcome]:
    """Run every pair in a process pool; outcomes in `pairs` order.

    `progress` (default: rich bars on stderr) hears of every pair's finished jobs. A pair that
    fails does not stop the others: its outcome carries the error instead.
    """
    if not pairs:
        return []
    if progress is None:
        from thrifty.sim.progress import ProgressBars

        progress = ProgressBars()
    workers = default_workers(len(pairs)) if workers is None else min(workers, len(pairs))
    outcomes: dict[int, Outcome] = {}
    with multiprocessing.Manager() as manager, progress:
        updates = manager.Queue()
        progress.start([p.name for p in pairs], [p.jobs for p in pairs])
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures: dict[Future[tuple[Summary, float, float]], int] = {
                pool.submit(_run_in_worker, i, p.spec, updates): i for i, p in enumerate(pairs)
            }
            pending = set(futures)
            try:
                while pending:
                    _drain(updates, progress)
                    finished, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                    for future in finished:
                        i = futures[future]
                        outcomes[i] = _outcome(pairs[i], future)
                        progress.end(i, outcomes[i].summary is not None)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        _drain(updates, progress)
    return [outcomes[i] for i in range(len(pairs))]


def _drain(updates: Any, progress: BatchProgress) -> None:
    while True:
        try:
            index, done, total = updates.get_nowait()
        except queue_module.Empty:
            return
        progress.update(index, done, total)


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
# Results as records
# --------------------------------------------------------------------------------------------


def json_number(value: Any) -> Any:
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
        row = {key: json_number(value) for key, value in outcome.summary.row().items()}
        row.update(
            workload=outcome.pair.label,
            path=str(spec.workload),
            cluster=spec.cluster,
            seed=spec.seed,
            interval_s=spec.interval_s,
            restart_delay_s=spec.restart_delay_s,
            load=spec.load,
            run_s=outcome.run_s,
            cpu_s=outcome.cpu_s,
        )
        rows.append(row)
    return rows


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per failed pair, "policy on workload: why", for an `error:` report."""
    return [f"{o.pair.spec.policy} on {o.pair.label}: {o.error}"
            for o in outcomes if o.error is not None]

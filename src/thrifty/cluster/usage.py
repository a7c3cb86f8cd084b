"""What the control plane's jobs used and cost: the allocation history, priced into a ledger.

The scheduler records every allocation a job held, from when to when, in the store. Priced with
a tariff, that history becomes the same ledger a simulation builds, so that `thrifty report`
reads live and simulated usage alike. Times are Unix seconds.

What a job measured replaces the model where it can: the start-up seconds its attempts reported
are the restart overhead (split evenly over its allocations, each of which began an attempt),
and the energy its GPUs' counters gave replaces the board-power estimate (marked "measured").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from thrifty.accounting.carbon import IntensitySeries
from thrifty.accounting.ledger import JobFacts, Ledger, UsageSegment, build_ledger
from thrifty.accounting.tariff import (
    Tariff,
    board_watts,
    load_sheet,
    power_model,
    resolve_intensity,
)
from thrifty.cluster.schema import AllocationRow, JobRow
from thrifty.cluster.store import Store
from thrifty.cluster.summary import stored_report
from thrifty.errors import ThriftyError
from thrifty.policy.base import NodeView

log = logging.getLogger(__name__)

DEFAULT_COUNTRY = "DEU"  # the built-in sheet's grid, as a country code CodeCarbon knows


def live_tariff(prices: Path | None = None, carbon: str | None = None,
                data_root: Path | None = None) -> Tariff:
    """The tariff a live cluster bills with: the sheet (default: built-in), board powers (the
    table in `data_root` where there is one, the sheet's own watts always), and a static grid
    intensity — a series is indexed from its first reading, which only simulated time shares."""
    sheet = load_sheet(prices)
    board = board_watts(data_root, required=False)
    region = carbon or (sheet.region if prices is not None else None) or DEFAULT_COUNTRY
    intensity = resolve_intensity(region, None)
    if isinstance(intensity, IntensitySeries):
        raise ThriftyError(f"carbon '{region}' is a time series, which only simulations can "
                           "use; give a country code such as DEU or a figure in gCO2/kWh")
    return Tariff(sheet, power_model(sheet, board), intensity)


def unpriced(tariff: Tariff, nodes: Iterable[NodeView]) -> list[str]:
    """Why each node could not be billed (no price or no power for its kind); [] when all can."""
    problems = []
    for node in nodes:
        try:
            tariff.gpu_usd_per_hour(node.gpu_kind, node.num_gpus, node.price_per_hour)
            tariff.power.watts(node.gpu_kind)
        except ThriftyError as err:
            problems.append(f"node {node.name}: {err}")
    return problems


def _segments(job: JobRow, rows: Sequence[AllocationRow], tariff: Tariff,
              nodes: dict[str, NodeView], now: float) -> list[UsageSegment]:
    report = stored_report(job)
    startup = None if report is None else report.startup_s
    restart_s = float(startup) / len(rows) if startup and rows else 0.0
    segments = []
    for row in rows:
        kind = str(row.allocation.get("kind", ""))
        gpus = {str(n): int(c) for n, c in (row.allocation.get("gpus") or {}).items()}
        usd_h = 0.0
        for name, count in gpus.items():
            node = nodes.get(name)  # a node that has left is billed at its kind's rate
            usd_h += count * tariff.gpu_usd_per_hour(
                kind, node.num_gpus if node else 1, node.price_per_hour if node else 0.0)
        end = row.end if row.end is not None else now
        segments.append(UsageSegment(job.id, f"{job.team}/{job.owner}", kind, sum(gpus.values()),
                                     row.start, max(end, row.start), usd_h, restart_s))
    return segments


def live_ledger(store: Store, tariff: Tariff, now: float, nodes: Iterable[NodeView] = (),
                owner: str | None = None, since: float | None = None) -> Ledger:
    """Every job's usage up to `now` (running allocations are cut there); `owner`: only theirs;
    `since`: only jobs that held GPUs after it (a budget period's, without the whole history)."""
    by_name = {n.name: n for n in nodes}
    segments: list[UsageSegment] = []
    facts: list[JobFacts] = []
    for job, rows in store.usage_history(owner=owner, since=since):
        segments += _segments(job, rows, tariff, by_name, now)
        report = stored_report(job)
        measured = None if report is None else report.energy_kwh
        facts.append(JobFacts(
            job=job.id, owner=f"{job.team}/{job.owner}", submit_s=job.submitted_at,
            application=job.name, completion_s=job.finished_at, restarts=job.restarts,
            measured_kwh=None if measured is None else float(measured),
        ))
    meta: dict[str, Any] = {"source": "control plane", "at": now, "prices": tariff.sheet.name,
                            "carbon": tariff.intensity.name}
    return build_ledger(segments, facts, tariff.power, tariff.intensity, meta)

"""Cost, energy and carbon of a simulated run: the run's ledger, priced with a tariff that
`thrifty.accounting.tariff` loads.

The simulator prices a run by wrapping its policy in a meter (`thrifty.policy.budgeted`), so every
allocation granted is billed at its node's price, and then joins the meter's segments with what
each job really ran (its GPU-seconds, restarts, completion) into a ledger.

A cloud bills differently: every node it holds, from request to release, busy or not. `held_bill`
prices the run's node timeline that way (a fixed cluster holds every node for the whole run), so a
fixed and an autoscaled cluster compare on what renting them would cost.
A carbon-aware run (jobs with deadlines, or `--carbon-slack`) wraps the policy in
`thrifty.policy.carbon_aware` inside the meter, and `shift_outcomes` reports per job what the wait
saved: the job's own segments re-priced as if it had not been held (see `kg_started_earlier`).

Simulated time 0 is the first reading of the carbon series (June 2020 for the shipped ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from thrifty.accounting.budgets import BudgetBook
from thrifty.accounting.carbon import (
    CarbonIntensity,
    IntensitySeries,
    ShiftOutcome,
    kg_started_earlier,
)
from thrifty.accounting.ledger import JobFacts, Ledger, build_ledger
from thrifty.accounting.tariff import Tariff
from thrifty.policy.base import NodeView, Policy
from thrifty.policy.budgeted import BudgetedPolicy, MeteredPolicy
from thrifty.policy.carbon_aware import StartPlan
from thrifty.sim.cluster import ClusterSpec
from thrifty.sim.engine import SimResult
from thrifty.sim.metrics import Summary
from thrifty.sim.workload import Workload


def check_prices(tariff: Tariff, nodes: Any) -> None:
    """Every node must have a price: its own, or its kind's in the sheet."""
    for node in nodes:
        tariff.gpu_usd_per_hour(node.gpu_kind, node.num_gpus, node.price_per_hour)


def metered(policy: Policy, tariff: Tariff, budgets: BudgetBook | None = None,
            interval_s: float = 60.0, sinks: Any = None) -> MeteredPolicy:
    if budgets is None:
        return MeteredPolicy(policy, tariff)
    if sinks is None:
        return BudgetedPolicy(policy, tariff, budgets, interval_s=interval_s)
    return BudgetedPolicy(policy, tariff, budgets, sinks=sinks, interval_s=interval_s)


def run_ledger(result: SimResult, workload: Workload, meter: MeteredPolicy, tariff: Tariff,
               interval_s: float) -> Ledger:
    """The ledger of a finished run: the meter's segments closed at the end of the last round."""
    last = max(j.completion_time for j in result.jobs)
    end = interval_s * -(-last // interval_s)  # allocations are held to the round's end
    segments = meter.finish(max(end, last))
    specs = {j.name: j for j in workload.jobs}
    facts = [
        JobFacts(
            job=r.name,
            owner=specs[r.name].owner,
            submit_s=r.submit_time,
            application=r.application,
            completion_s=r.completion_time,
            restarts=r.restarts,
            used_gpu_seconds=r.gpu_seconds,
        )
        for r in result.jobs
    ]
    intensity = tariff.intensity
    meta: dict[str, Any] = {
        "policy": result.policy,
        "workload": result.workload,
        "cluster": result.cluster,
        "prices": tariff.sheet.name,
        "carbon": intensity.name,
        "pue": tariff.power.pue,
        "origin": intensity.origin.isoformat() if isinstance(intensity, IntensitySeries)
        else None,
    }
    if isinstance(meter, BudgetedPolicy):
        meta["budget_events"] = [e.__dict__ for e in meter.events]
        meta["alerts"] = [a.to_dict() for a in meter.alerts]
    return build_ledger(segments, facts, tariff.power, intensity, meta)


def with_costs(summary: Summary, ledger: Ledger, keep_ledger: bool = False,
               held: tuple[float, float] | None = None) -> Summary:
    """The summary with the ledger's totals and, if given, the held nodes' (hours, USD)."""
    totals = ledger.totals()
    node_hours, held_usd = held if held is not None else (float("nan"), float("nan"))
    return replace(
        summary,
        node_hours=node_hours,
        held_usd=held_usd,
        usd=totals["usd"],
        kwh=totals["kwh"],
        kgco2e=totals["kgco2e"],
        allocated_gpu_hours=totals["gpu_hours"],
        ledger=ledger if keep_ledger else None,
    )


def node_usd_per_hour(tariff: Tariff, kind: str, num_gpus: int, price_per_hour: float) -> float:
    """USD per node-hour: the node's own price, else its GPUs at the sheet's rate."""
    return tariff.gpu_usd_per_hour(kind, num_gpus, price_per_hour) * num_gpus


def priced_pool(cluster: ClusterSpec, tariff: Tariff) -> tuple[NodeView, ...]:
    """The cluster's nodes with a price each, so that an autoscaler weighs shapes by real cost."""
    return tuple(
        NodeView(n.name, n.gpu_kind, n.num_gpus,
                 node_usd_per_hour(tariff, n.gpu_kind, n.num_gpus, n.price_per_hour))
        for n in cluster.nodes
    )


def held_bill(result: SimResult, tariff: Tariff) -> tuple[float, float]:
    """(node-hours, USD) of every node held during the run, billed from request to release."""
    end = max((r.released_s or 0.0 for r in result.nodes), default=0.0)
    hours = usd = 0.0
    for record in result.nodes:
        held = record.held_seconds(end) / 3600
        hours += held
        usd += held * node_usd_per_hour(tariff, record.gpu_kind, record.num_gpus,
                                        record.usd_per_hour)
    return hours, usd
def shift_outcomes(
    ledger: Ledger, plans: Mapping[str, StartPlan], intensity: CarbonIntensity
) -> list[ShiftOutcome]:
    """Per job of a carbon-aware run: kg CO2e as run, and as if started when first seen.

    The counterfactual keeps the job's own run (its segments, energy and any queueing after
    release) and moves it earlier by the time it was held: it isolates what the wait itself
    saved. It does not model how the other jobs would have fared had this one not waited; a
    side-by-side run without the wrapper measures that (benchmarks/accounting_carbon.py).
    """
    pieces: dict[str, list[tuple[float, float, float]]] = {}
    for line in ledger.lines:
        pieces.setdefault(line.job, []).append((line.kwh, line.start_s, line.end_s))
    outcomes = []
    for entry in ledger.entries:
        plan = plans.get(entry.job)
        held = plan.held_s if plan is not None else 0.0
        at_once = (kg_started_earlier(pieces.get(entry.job, []), intensity, held) if held > 0
                   else entry.kgco2e)
        outcomes.append(ShiftOutcome(
            entry.job, plan.deadline_s if plan is not None else None, held, entry.end_s,
            entry.kgco2e, at_once,
        ))
    return outcomes


def with_shift(summary: Summary, outcomes: list[ShiftOutcome]) -> Summary:
    with_deadline = [o for o in outcomes if o.deadline_s is not None]
    return replace(
        summary,
        kgco2e_at_once=math.fsum(o.kgco2e_at_once for o in outcomes),
        deadline_jobs=len(with_deadline),
        deadlines_missed=sum(not o.met for o in with_deadline),
        carbon_shift=tuple(outcomes),
    )

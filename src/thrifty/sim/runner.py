"""Run one (policy, workload, cluster) simulation from names and paths, as a picklable call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from thrifty.accounting.budgets import load_budgets
from thrifty.accounting.tariff import load_tariff
from thrifty.policy.carbon_aware import CarbonAwarePolicy
from thrifty.policy.registry import make_policy
from thrifty.sim.autoscale import Autoscaler
from thrifty.sim.cluster import load_cluster
from thrifty.sim.costing import (
    held_bill,
    metered,
    priced_pool,
    run_ledger,
    shift_outcomes,
    with_costs,
    with_shift,
)
from thrifty.sim.engine import SimSettings, simulate
from thrifty.sim.metrics import Summary, summarize
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import load_workload, scale_load


@dataclass(frozen=True)
class RunSpec:
    policy: str
    workload: Path
    cluster: str
    data_root: Path
    seed: int = 0
    interval_s: float = 60.0
    restart_delay_s: float | None = None
    load: float = 1.0
    prices: Path | None = None  # price sheet TOML (default: the built-in sheet)
    carbon: str | None = None  # region, CSV or gCO2/kWh (default: the sheet's region)
    budgets: Path | None = None  # budget TOML: caps enforced while simulating
    keep_ledger: bool = False  # return the whole ledger with the summary
    autoscale: bool = False  # rent the cluster's nodes as jobs need them (its [autoscale] table)
    # seconds every job without a deadline of its own may finish later than if started at
    # once, to start in greener hours; None: only the workload's `deadline` column applies
    carbon_slack: float | None = None


def run(spec: RunSpec, on_round: Callable[[int, int], None] | None = None) -> Summary:
    cluster = load_cluster(spec.cluster)
    profiles = ProfileSet(spec.data_root, cluster.profiles)
    workload = load_workload(spec.workload, profiles.applications)
    if spec.load != 1.0:
        workload = scale_load(workload, spec.load)
    tariff = load_tariff(spec.data_root, cluster.kinds, spec.prices, spec.carbon)
    book = load_budgets(spec.budgets) if spec.budgets is not None else None
    inner = make_policy(spec.policy, seed=spec.seed)
    shifter = None
    if spec.carbon_slack is not None or any(j.deadline is not None for j in workload.jobs):
        shifter = CarbonAwarePolicy(inner, tariff.intensity, slack_s=spec.carbon_slack)
    policy = metered(shifter or inner, tariff, book, spec.interval_s)
    settings = SimSettings(interval_s=spec.interval_s, restart_delay_s=spec.restart_delay_s)
    scaler = None
    if spec.autoscale:
        scaler = Autoscaler(priced_pool(cluster, tariff), cluster.autoscale)
    result = simulate(workload, cluster, policy, profiles, settings, on_round=on_round,
                      autoscaler=scaler)
    apps = {j.application: profiles.get(j.application, cluster.kinds) for j in workload.jobs}
    ledger = run_ledger(result, workload, policy, tariff, spec.interval_s)
    summary = with_costs(summarize(result, cluster, apps), ledger, spec.keep_ledger,
                         held_bill(result, tariff))
    if shifter is None:
        return summary
    return with_shift(summary, shift_outcomes(ledger, shifter.plans, tariff.intensity))

"""A budget month: one team's money runs out, its jobs stop at the cap and resume next month.

Pollux workload 6 (160 jobs over 8 hours) on `pollux64`, its jobs dealt round-robin to three
teams. Team `vision` gets a monthly budget of 60 % of what its jobs cost uncapped; the others
have none. Prints vision's spend in month 1 against the cap (and the most it may pass it by: one
scheduling interval of its whole allocation), what happened to its jobs (paused, resumed, finished
with their progress kept), and the other teams' JCTs against the uncapped run.

    python benchmarks/accounting_budget.py [--policy fifo] [--share 0.6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from thrifty.accounting.budgets import Budget, BudgetBook
from thrifty.accounting.tariff import load_tariff
from thrifty.cli.options import resolve_data
from thrifty.policy.budgeted import BudgetedPolicy
from thrifty.policy.registry import make_policy
from thrifty.sim.cluster import pollux64
from thrifty.sim.costing import run_ledger
from thrifty.sim.engine import SimSettings, simulate
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import load_workload

TEAMS = ("vision", "nlp", "recsys")
INTERVAL = 60.0
MONTH = 30 * 86400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="fifo")
    parser.add_argument("--share", type=float, default=0.6)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    root = resolve_data(args.data)
    source = root / "pollux" / "workloads" / "workload-6.csv"
    lines = source.read_text().splitlines()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "workload-6-teams.csv"
        path.write_text("\n".join(
            [lines[0] + ",user,team"]
            + [f"{row},u{i % 5},{TEAMS[i % 3]}" for i, row in enumerate(lines[1:])]) + "\n")
        workload = load_workload(path)
    cluster = pollux64()
    profiles = ProfileSet(root, "pollux")
    tariff = load_tariff(root, cluster.kinds, carbon="ger")

    def run(book: BudgetBook):
        policy = BudgetedPolicy(make_policy(args.policy), tariff, book, sinks=(),
                                interval_s=INTERVAL)
        started = time.perf_counter()
        result = simulate(workload, cluster, policy, profiles,
                          SimSettings(interval_s=INTERVAL, max_hours=24 * 70))
        ledger = run_ledger(result, workload, policy, tariff, INTERVAL)
        return result, ledger, policy, time.perf_counter() - started

    free, free_ledger, _, wall_free = run(BudgetBook())
    vision_usd = sum(e.usd for e in free_ledger.entries if e.team == "vision")
    cap = args.share * vision_usd
    book = BudgetBook({("team", "vision"): Budget("team", "vision", usd_per_month=cap)},
                      period_s=MONTH)
    capped, ledger, policy, wall_capped = run(book)
    month1 = sum(
        line.usd * (min(line.end_s, MONTH) - line.start_s) / (line.end_s - line.start_s)
        for line in ledger.lines if line.team == "vision" and line.start_s < MONTH
    )
    one_interval = cluster.num_gpus * tariff.sheet.node_usd_per_gpu_hour(
        "aws", 4, cluster.nodes[0].price_per_hour) * INTERVAL / 3600
    stopped = {e.job for e in policy.events if e.action in ("paused", "withheld")}
    base = {r.name: r for r in free.jobs}
    after = {r.name: r for r in capped.jobs}
    team_of = {j.name: j.team for j in workload.jobs}
    print(f"policy {args.policy}, Pollux workload 6 ({len(workload.jobs)} jobs), teams "
          f"{', '.join(TEAMS)}; simulated in {wall_free:.0f} s (uncapped) and {wall_capped:.0f} s")
    print(f"vision uncapped spend: USD {vision_usd:.2f}; monthly cap: USD {cap:.2f} "
          f"({args.share:.0%})")
    print(f"vision spend in month 1: USD {month1:.2f} = {month1 / cap:.4f} × cap; allowed "
          f"overshoot (one interval of the whole cluster): USD {one_interval:.2f}; "
          f"over cap by USD {max(month1 - cap, 0):.2f}")
    print(f"vision jobs stopped at the cap: {len(stopped)} of "
          f"{sum(t == 'vision' for t in team_of.values())}; all finished: "
          f"{all(after[j].completion_time > 0 for j in stopped)}; finished after the month "
          f"turned: {sum(after[j].completion_time > MONTH for j in stopped)}")
    ratios = [sum(after[j].gpu_seconds.values()) / sum(base[j].gpu_seconds.values())
              for j in stopped if sum(base[j].gpu_seconds.values()) > 0]
    if ratios:
        print(f"stopped jobs' GPU time vs uncapped (progress kept ⇒ ≈ 1): median "
              f"{statistics.median(ratios):.3f}, max {max(ratios):.3f}")
    for team in TEAMS[1:]:
        jct = [(after[j].completion_time - after[j].submit_time)
               / (base[j].completion_time - base[j].submit_time)
               for j in base if team_of[j] == team]
        print(f"{team}: JCT capped / uncapped: mean {statistics.mean(jct):.3f}, "
              f"max {max(jct):.3f} (≤ 1: unaffected or helped)")


if __name__ == "__main__":
    main()

"""Speed: how long a full 160-job simulation takes, against the time we promise to stay under.

Simulates Pollux workload 6 (160 jobs over 8 hours) on `pollux64` under each policy, through the
same code as `thrifty simulate`, and prints the wall seconds of the whole run (profiles,
simulation, metrics) and its CPU seconds, the wall seconds of the simulation loop alone, the
policy's time per scheduling round (median and p95), and the ratio of the whole run's wall time to
its budget (≤ 1.00 is within budget). Budgets: tiresias 20 s, pollux 300 s. Runs one simulation at
a time by default, so that the timings do not compete for CPUs; on a machine busy with other work,
wall seconds exceed CPU seconds and the ratio overstates the cost.

    python benchmarks/speed.py
    python benchmarks/speed.py --policies tiresias
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.table import Table

from common import add_run_options, finish
from thrifty.cli.options import resolve_data
from thrifty.cli.output import results_console
from thrifty.errors import ThriftyError
from thrifty.sim.batch import Outcome, plan_runs, run_pairs

BUDGETS_S: Mapping[str, float] = {"tiresias": 20.0, "pollux": 300.0}
WORKLOAD = Path("pollux") / "workloads" / "workload-6.csv"
CLUSTER = "pollux64"


def speed_table(outcomes: Sequence[Outcome]) -> Table:
    """One row per policy: where the time went, and the verdict against its budget."""
    table = Table(title=f"Speed: {WORKLOAD.stem} (160 jobs) on {CLUSTER}", header_style="bold")
    table.add_column("policy")
    for header in ("run s", "run CPU s", "sim loop s", "round med ms", "round p95 ms", "budget s",
                   "run / budget"):
        table.add_column(header, justify="right")
    table.add_column("")
    for outcome in outcomes:
        s = outcome.summary
        if s is None:
            continue
        budget = BUDGETS_S[outcome.pair.spec.policy]
        ratio = outcome.run_s / budget
        table.add_row(
            outcome.pair.spec.policy,
            f"{outcome.run_s:.1f}",
            f"{outcome.cpu_s:.1f}",
            f"{s.wall_s:.1f}",
            f"{s.policy_round_median_s * 1e3:.2f}",
            f"{s.policy_round_p95_s * 1e3:.2f}",
            f"{budget:.0f}",
            f"{ratio:.2f}",
            "[green]within[/]" if ratio <= 1 else "[red]over[/]",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Time each policy; the exit status is 1 when a run fails or goes over its budget."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default=",".join(BUDGETS_S),
                        help=f"comma-separated subset of {', '.join(BUDGETS_S)}")
    add_run_options(parser)
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in BUDGETS_S]
    if unknown or not policies:
        print(f"error: --policies: no budget for {', '.join(unknown) or 'nothing'} "
              f"(budgets: {', '.join(BUDGETS_S)})", file=sys.stderr)
        return 2
    try:
        root = resolve_data(args.data)
        pairs = plan_runs([root / WORKLOAD], CLUSTER, policies, root)
    except ThriftyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outcomes = run_pairs(pairs, args.workers)
    results_console().print(speed_table(outcomes))
    failed = finish(outcomes, args.json)
    over = [o for o in outcomes
            if o.summary is not None and o.run_s > BUDGETS_S[o.pair.spec.policy]]
    return 1 if failed or over else 0


if __name__ == "__main__":
    sys.exit(main())

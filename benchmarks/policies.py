"""thrifty's policy against the best published goodput schedulers, side by side in one run.

For each suite, every workload runs under `thrifty` and its baselines through exactly the code
behind `thrifty simulate`; the table gives thrifty's average JCT, p99 JCT and makespan as ratios
to each baseline's on the same workload (below 1: thrifty is better), restarts per job and the
policies' time per scheduling round. Targets (checked by eye, printed beside the figures):
average JCT ≤ 0.85 × Sia on `sia-hetero64` and ≤ 0.85 × Pollux on `pollux64`; p99 JCT and
makespan no worse than the better baseline; restarts per job ≤ 2.5.

    python benchmarks/policies.py                                # philly, saturn, pollux64
    python benchmarks/policies.py --suite philly --load 2 --seed 1
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.table import Table

from thrifty.cli.options import resolve_data
from thrifty.cli.output import results_console
from thrifty.sim.batch import Outcome, failures, plan_runs, run_pairs

SUITES: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    # suite: (cluster, workload folder under the data root, baselines)
    "philly": ("sia-hetero64", "sia/workloads/philly", ("sia", "pollux")),
    "saturn": ("sia-hetero64", "sia/workloads/saturn", ("sia", "pollux")),
    "pollux64": ("pollux64", "pollux/workloads", ("pollux",)),
}
TARGET_AVG_RATIO = 0.85


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def comparison_table(suite: str, outcomes: Sequence[Outcome], baselines: Sequence[str]) -> Table:
    """Per workload and as means: thrifty's figures over each baseline's."""
    runs = {(o.pair.label, o.pair.spec.policy): o.summary for o in outcomes if o.summary}
    labels = sorted({label for label, _ in runs})
    table = Table(title=f"{suite}: thrifty / baseline (below 1 is better)", header_style="bold")
    for header in ("workload", "baseline", "avg JCT h (thrifty / base)", "avg ratio",
                   "p99 ratio", "makespan ratio", "restarts/job (thrifty / base)",
                   "round med ms (thrifty / base)", "round p95 ms (thrifty / base)"):
        table.add_column(header, justify="left" if header in ("workload", "baseline") else "right")
    means: dict[str, list[tuple[float, ...]]] = {}
    for label in labels:
        ours = runs.get((label, "thrifty"))
        for base in baselines:
            theirs = runs.get((label, base))
            if ours is None or theirs is None:
                continue
            row = (
                ours.avg_jct_s / 3600, theirs.avg_jct_s / 3600,
                ours.p99_jct_s / theirs.p99_jct_s, ours.makespan_s / theirs.makespan_s,
                ours.restarts_per_job, theirs.restarts_per_job,
                ours.policy_round_median_s * 1e3, theirs.policy_round_median_s * 1e3,
                ours.policy_round_p95_s * 1e3, theirs.policy_round_p95_s * 1e3,
            )
            means.setdefault(base, []).append(row)
            table.add_row(label, base, *_cells(row))
    table.add_section()
    for base, rows in means.items():
        mean = tuple(_mean(col) for col in zip(*rows, strict=True))
        verdict = "meets" if mean[0] / mean[1] <= TARGET_AVG_RATIO else "misses"
        table.add_row(f"mean of {len(rows)}", f"{base} ({verdict} {TARGET_AVG_RATIO})",
                      *_cells(mean), style="bold")
    return table


def _cells(row: Sequence[float]) -> list[str]:
    ours, theirs, p99, makespan, r_ours, r_theirs, med_o, med_t, p95_o, p95_t = row
    return [
        f"{ours:.3f} / {theirs:.3f}", f"{ours / theirs:.2f}", f"{p99:.2f}", f"{makespan:.2f}",
        f"{r_ours:.2f} / {r_theirs:.2f}", f"{med_o:.0f} / {med_t:.0f}",
        f"{p95_o:.0f} / {p95_t:.0f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--baselines", help="comma-separated subset of the suite's baselines")
    parser.add_argument("--load", type=float, default=1.0, help="relative arrival rate (1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, help="parallel processes (default: CPUs)")
    parser.add_argument("--data", type=Path, help="measured data folder (default: shared/data)")
    args = parser.parse_args(argv)
    console = results_console()
    data_root = resolve_data(args.data)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    failed = 0
    for suite in suites:
        cluster, folder, baselines = SUITES[suite]
        if args.baselines:
            baselines = tuple(b for b in baselines if b in args.baselines.split(","))
        files = sorted((data_root / folder).glob("workload-*.csv"))
        pairs = plan_runs(files, cluster, ["thrifty", *baselines], data_root,
                          seed=args.seed, load=args.load)
        outcomes = run_pairs(pairs, args.workers)
        for line in failures(outcomes):
            failed += 1
            print(f"error: {line}", file=sys.stderr)
        console.print(comparison_table(f"{suite} (load {args.load}, seed {args.seed})",
                                       outcomes, baselines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale: policies on a cluster and workload sampled × `--scale` from the measured ones.

Generates, with the same generator as `thrifty workload generate`, the base cluster
(`sia-hetero64` by default) with every node group × `--scale` and a workload resampled from the
base workloads (Philly 1-4 by default) arriving × `--scale` as fast over the same 8 hours; then
runs each policy on it through the same code as `thrifty simulate`, one at a time. Per policy it
prints the jobs, the most jobs in flight at once (`--load 2` doubles the arrival rate per GPU
to reach thousands), average and p99 JCT, makespan, the policy's
time per round (median, p95) against the 2 s median budget at 2,048 GPUs, and the simulator's
own time per round (everything but the policy) against a 1 s budget, with their ratios.

    python benchmarks/scale.py                                  # fifo, tiresias at × 32
    python benchmarks/scale.py --policies tiresias --scale 8 --jobs 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from common import add_run_options, finish
from thrifty.cli.options import resolve_data
from thrifty.cli.output import results_console
from thrifty.errors import ThriftyError
from thrifty.sim.batch import Outcome, plan_runs, run_pairs
from thrifty.sim.cluster import load_cluster
from thrifty.sim.generate import cluster_toml, generate_workload, scale_cluster, workload_csv
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import load_workload, workload_files

POLICY_ROUND_BUDGET_S = 2.0  # median policy round at 2,048 GPUs
SIM_ROUND_BUDGET_S = 1.0  # the simulator's own time per round, to stay well under it
BASE_CLUSTER = "sia-hetero64"
BASE_WORKLOADS = Path("sia") / "workloads" / "philly"


def generate_inputs(
    root: Path, folder: Path, scale: float, seed: int, jobs: int | None, base: Path,
    load: float = 1.0,
) -> tuple[Path, Path]:
    """Write the scaled cluster TOML and workload CSV into `folder`; returns their paths."""
    cluster = load_cluster(BASE_CLUSTER)
    applications = ProfileSet(root, cluster.profiles).applications
    bases = [load_workload(path, applications) for path in workload_files([base])]
    scaled = scale_cluster(cluster, scale)
    workload = generate_workload(bases, rate_scale=scale * load, jobs=jobs, seed=seed,
                                 name=f"{base.name}x{scale * load:g}")
    cluster_path = folder / f"{scaled.name}.toml"
    workload_path = folder / f"{workload.name}.csv"
    cluster_path.write_text(cluster_toml(scaled))
    workload_path.write_text(workload_csv(workload))
    return cluster_path, workload_path


def scale_table(outcomes: Sequence[Outcome], title: str) -> Table:
    table = Table(title=title, header_style="bold")
    table.add_column("policy")
    for header in ("jobs", "peak in flight", "avg JCT h", "p99 JCT h", "makespan h",
                   "policy med ms", "policy p95 ms", "policy med / 2 s", "sim med ms",
                   "sim p95 ms", "sim med / 1 s", "run s"):
        table.add_column(header, justify="right")
    for outcome in outcomes:
        s = outcome.summary
        if s is None:
            continue
        table.add_row(
            outcome.pair.spec.policy,
            str(s.jobs),
            str(s.peak_jobs_in_flight),
            f"{s.avg_jct_s / 3600:.2f}",
            f"{s.p99_jct_s / 3600:.2f}",
            f"{s.makespan_s / 3600:.2f}",
            f"{s.policy_round_median_s * 1e3:.1f}",
            f"{s.policy_round_p95_s * 1e3:.1f}",
            f"{s.policy_round_median_s / POLICY_ROUND_BUDGET_S:.3f}",
            f"{s.sim_round_median_s * 1e3:.1f}",
            f"{s.sim_round_p95_s * 1e3:.1f}",
            f"{s.sim_round_median_s / SIM_ROUND_BUDGET_S:.3f}",
            f"{outcome.run_s:.0f}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, run, report; exit 1 when a run fails, 2 on bad options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default="fifo,tiresias", help="comma-separated policies")
    parser.add_argument("--scale", type=float, default=32.0,
                        help="nodes and arrival rate × this (default 32: 2,048 GPUs)")
    parser.add_argument("--load", type=float, default=1.0,
                        help="arrival rate × this on top of --scale (2: twice the load per GPU)")
    parser.add_argument("--jobs", type=int, help="generate this many jobs (default: 8 hours)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--base", type=Path,
                        help="base workload folder (default: the Philly workloads of sia/)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="thrifty-scale-") as tmp:
        try:
            root = resolve_data(args.data)
            base = args.base or root / BASE_WORKLOADS
            cluster, workload = generate_inputs(
                root, Path(tmp), args.scale, args.seed, args.jobs, base, args.load
            )
            pairs = plan_runs([workload], str(cluster), policies, root)
        except ThriftyError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        spec = load_cluster(str(cluster))
        outcomes = run_pairs(pairs, args.workers)
    title = (f"Scale: {pairs[0].jobs} jobs on {spec.name} ({spec.num_gpus} GPUs, "
             f"{len(spec.nodes)} nodes), load × {args.load:g}, seed {args.seed}")
    results_console().print(scale_table(outcomes, title))
    return 1 if finish(outcomes, args.json) else 0


if __name__ == "__main__":
    sys.exit(main())

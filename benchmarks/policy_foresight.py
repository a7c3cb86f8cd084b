"""How much better predictions could buy thrifty's policy: the same policy with perfect foresight.

thrifty predicts a job's time to finish from the goodput its model gives today. That model is
fitted only to the configurations the job has run, and its gradient noise is today's: the noise
grows as training proceeds, so large allocations pay off more later than they appear to now.
`thrifty-foresight` is the same policy told the truth instead: a job's time to finish on every
configuration comes from its application's measured profile (throughput fitted to every
measured placement, gradient noise per stretch of the epochs still ahead, the cluster's
slowdown applied). No live scheduler can know this; the gap between the two is the most that any
better prediction (history of earlier jobs, a noise-growth prior) could win for this policy.

Each suite's workloads run under its baseline, thrifty and thrifty-foresight; the table gives the
mean average JCT, p99 JCT, makespan and restarts per job of each, and the ratios to the baseline.

    python benchmarks/policy_foresight.py                        # philly, saturn, pollux64
    python benchmarks/policy_foresight.py --suite philly --workers 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import fmean

import numpy as np
from numpy.typing import NDArray
from rich.table import Table

from policies import SUITES, TARGET_AVG_RATIO
from thrifty.cli.options import resolve_data
from thrifty.cli.output import results_console
from thrifty.policy.base import JobView
from thrifty.policy.registry import make_policy
from thrifty.policy.thrifty import ThriftyPolicy
from thrifty.sim.advice import profile_phases
from thrifty.sim.cluster import load_cluster
from thrifty.sim.engine import simulate
from thrifty.sim.job import SimJob
from thrifty.sim.metrics import Summary, summarize
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import load_workload

FORESIGHT = "thrifty-foresight"
PHASES = 8  # stretches of training with their own gradient noise


class ForesightPolicy(ThriftyPolicy):
    """thrifty, with every simulated job's time to finish taken from its measured profile."""

    name = FORESIGHT

    def __init__(self, slowdown: dict[str, float]):
        super().__init__()
        self.slowdown = slowdown
        # (application, growth cap, replica limit) -> goodput per phase and config, phase bounds
        self._phases: dict[tuple, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}

    def predicted_finish(
        self, jobs: Sequence[JobView], goodput: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        finish = super().predicted_finish(jobs, goodput)
        for i, job in enumerate(jobs):
            if job.model is not None and isinstance(job.oracle, SimJob):
                truth = self._true_finish(job, job.oracle)
                finish[i] = np.where(np.isfinite(finish[i]), truth, np.inf)
        return finish

    def _true_finish(self, job: JobView, sim: SimJob) -> NDArray[np.float64]:
        """Seconds to finish on every configuration: what is left of each stretch of training
        at that stretch's true goodput."""
        key = (job.application, job.max_replicas, job.replica_limit)
        if key not in self._phases:
            assert self._table is not None  # set by `allocate` before it asks
            phases = profile_phases(sim.profile, PHASES)
            slowdown = self.slowdown.get(job.application, self.slowdown.get("*", 1.0))
            rows = np.array([self._table.row(job, p.model) for p in phases]) / slowdown
            bounds = np.concatenate([[0.0], np.cumsum([p.progress for p in phases])])
            self._phases[key] = (rows, bounds)
        rows, bounds = self._phases[key]
        left = np.clip(bounds[1:] - np.maximum(bounds[:-1], sim.progress), 0.0, None)
        seconds = np.divide(left[:, None], rows, out=np.full(rows.shape, np.inf), where=rows > 0)
        seconds[left == 0] = 0.0  # phases already done cost nothing, on any configuration
        return seconds.sum(axis=0)


def run_one(policy: str, workload: Path, cluster_name: str, data: Path) -> Summary:
    cluster = load_cluster(cluster_name)
    profiles = ProfileSet(data, cluster.profiles)
    loaded = load_workload(workload, profiles.applications)
    chosen = ForesightPolicy(dict(cluster.slowdown)) if policy == FORESIGHT else make_policy(policy)
    result = simulate(loaded, cluster, chosen, profiles)
    apps = {j.application: profiles.get(j.application, cluster.kinds) for j in loaded.jobs}
    return summarize(result, cluster, apps)


def foresight_table(suite: str, baseline: str, runs: dict[str, list[Summary]]) -> Table:
    table = Table(title=f"{suite}: means over {len(runs[baseline])} workloads", header_style="bold")
    for header in (
        "policy",
        "avg JCT h",
        f"avg / {baseline}",
        "p99 h",
        "makespan h",
        "restarts/job",
    ):
        table.add_column(header, justify="left" if header == "policy" else "right")
    base = fmean([s.avg_jct_s for s in runs[baseline]])
    for policy, summaries in runs.items():
        avg = fmean([s.avg_jct_s for s in summaries])
        table.add_row(
            policy,
            f"{avg / 3600:.3f}",
            f"{avg / base:.3f}",
            f"{fmean([s.p99_jct_s for s in summaries]) / 3600:.2f}",
            f"{fmean([s.makespan_s for s in summaries]) / 3600:.2f}",
            f"{fmean([s.restarts_per_job for s in summaries]):.2f}",
        )
    table.caption = f"target: thrifty ≤ {TARGET_AVG_RATIO} × {baseline}"
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, help="measured data folder (default: shared/data)")
    args = parser.parse_args(argv)
    data = resolve_data(args.data)
    console = results_console()
    for suite in list(SUITES) if args.suite == "all" else [args.suite]:
        cluster, folder, baselines = SUITES[suite]
        policies = [baselines[0], "thrifty", FORESIGHT]
        files = sorted((data / folder).glob("workload-*.csv"))
        with ProcessPoolExecutor(args.workers) as pool:
            futures = {
                p: [pool.submit(run_one, p, f, cluster, data) for f in files] for p in policies
            }
            runs = {p: [f.result() for f in futures[p]] for p in policies}
        console.print(foresight_table(suite, baselines[0], runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

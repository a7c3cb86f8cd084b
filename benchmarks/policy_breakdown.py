"""Where a policy's job completion time goes: per application, contention against running alone.

Runs one workload under each policy, then every job of it alone on the same cluster under the same
policy (its "isolated" time: no other job to share with). Per application it prints the summed
JCT, the summed isolated JCT, their difference (the cost of contention, which is what a
scheduling policy can win back), restarts, and how often running jobs were pre-empted to nothing
or moved to another configuration. This is the breakdown to read before changing a policy: the
average JCT alone does not say which jobs pay for a gain.

    python benchmarks/policy_breakdown.py ../shared/data/sia/workloads/philly/workload-2.csv
    python benchmarks/policy_breakdown.py WORKLOAD.csv --cluster pollux64 --policies thrifty,pollux
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.table import Table

from thrifty.cli.options import resolve_data
from thrifty.cli.output import results_console
from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, ClusterView, JobView, Policy, PolicyWrapper
from thrifty.policy.registry import make_policy
from thrifty.sim.cluster import ClusterSpec, load_cluster
from thrifty.sim.engine import SimResult, simulate
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import Workload, load_workload, scale_load

Changes = dict[str, dict[str, int]]  # "preempted" / "moved": job name -> count


class Recorder(PolicyWrapper):
    """Passes every round through to `inner` and counts, per job, how its allocation changed."""

    def __init__(self, inner: Policy):
        super().__init__(inner)
        self.preempted: Counter[str] = Counter()
        self.moved: Counter[str] = Counter()

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        granted = self.inner.allocate(jobs, cluster, now)
        for job in jobs:
            if job.allocation is None:
                continue
            new = granted.get(job.id)
            if new is None or new.num_replicas == 0:  # the simulator's test for "no GPUs"
                self.preempted[job.id] += 1
            elif not new.same_as(job.allocation):
                self.moved[job.id] += 1
        return granted


def _inputs(
    path: Path, cluster: str, load: float, data: Path | None
) -> tuple[Workload, ClusterSpec, ProfileSet]:
    spec = load_cluster(cluster)
    profiles = ProfileSet(resolve_data(data), spec.profiles)
    workload = load_workload(path, profiles.applications)
    return (scale_load(workload, load) if load != 1.0 else workload), spec, profiles


def run_shared(
    workload: Path, cluster: str, policy: str, load: float, data: Path | None
) -> tuple[SimResult, Changes]:
    """The whole workload: each job's JCT, restarts, pre-emptions and moves."""
    loaded, spec, profiles = _inputs(workload, cluster, load, data)
    recorder = Recorder(make_policy(policy))
    result = simulate(loaded, spec, recorder, profiles)
    return result, {"preempted": dict(recorder.preempted), "moved": dict(recorder.moved)}


def run_alone(
    workload: Path, cluster: str, policy: str, load: float, index: int, data: Path | None
) -> float:
    """JCT of job `index` on the otherwise empty cluster, submitted at its own time (so it waits
    for the next round boundary just as it does in the shared run)."""
    loaded, spec, profiles = _inputs(workload, cluster, load, data)
    job = loaded.jobs[index]
    alone = dataclasses.replace(loaded, jobs=(job,))
    return simulate(alone, spec, make_policy(policy), profiles).jobs[0].completion_time - (
        job.submit_time
    )


def breakdown_table(
    policy: str, result: SimResult, changes: Changes, alone: Sequence[float]
) -> Table:
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0, 0, 0])
    for job, isolated in zip(result.jobs, alone, strict=True):
        row = rows[job.application]
        row[0] += 1
        row[1] += (job.completion_time - job.submit_time) / 3600
        row[2] += isolated / 3600
        row[3] += job.restarts
        row[4] += changes["preempted"].get(job.name, 0)
        row[5] += changes["moved"].get(job.name, 0)
    total = [sum(r[i] for r in rows.values()) for i in range(6)]
    table = Table(
        title=f"{policy}: {result.workload} on {result.cluster}, average JCT "
        f"{total[1] / total[0]:.3f} h (alone {total[2] / total[0]:.3f} h)",
        header_style="bold",
    )
    for column in (
        "application",
        "jobs",
        "JCT h",
        "alone h",
        "contention h",
        "restarts",
        "pre-empted",
        "moved",
    ):
        table.add_column(column, justify="left" if column == "application" else "right")
    for name, row in [*sorted(rows.items()), ("all", total)]:
        table.add_row(
            name,
            f"{row[0]:.0f}",
            f"{row[1]:.2f}",
            f"{row[2]:.2f}",
            f"{row[1] - row[2]:.2f}",
            *(f"{v:.0f}" for v in row[3:]),
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", type=Path)
    parser.add_argument("--cluster", default="sia-hetero64")
    parser.add_argument("--policies", default="thrifty,sia")
    parser.add_argument("--load", type=float, default=1.0, help="arrival rate × this")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="the measured-data folder")
    args = parser.parse_args(argv)
    policies = args.policies.split(",")
    try:  # bad names and files fail here, with the message, not inside the pool
        for name in policies:
            make_policy(name)
        count = len(_inputs(args.workload, args.cluster, args.load, args.data)[0].jobs)
    except ThriftyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    console = results_console()
    with ProcessPoolExecutor(args.workers) as pool:
        shared = [
            pool.submit(run_shared, args.workload, args.cluster, p, args.load, args.data)
            for p in policies
        ]
        alone = {
            p: [
                pool.submit(run_alone, args.workload, args.cluster, p, args.load, i, args.data)
                for i in range(count)
            ]
            for p in policies
        }
        for policy, future in zip(policies, shared, strict=True):
            result, changes = future.result()
            isolated = [f.result() for f in alone[policy]]
            console.print(breakdown_table(policy, result, changes, isolated))
    return 0


if __name__ == "__main__":
    sys.exit(main())

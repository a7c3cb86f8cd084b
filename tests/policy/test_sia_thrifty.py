"""Sia and thrifty on hand-built goodput models: what each values, and what makes them move."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.errors import ThriftyError
from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.registry import make_policy
from thrifty.policy.sia import SiaPolicy
from thrifty.policy.thrifty import ThriftyPolicy
from thrifty.sim.cluster import load_cluster
from thrifty.sim.engine import SimSettings, simulate
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import Workload, load_workload

LIMITS = BatchLimits(init_batch_size=128, max_batch_size=8192, min_local_bsz=16, max_local_bsz=256)
SLOW = ThroughputParams(0.05, 0.002, 0.01, 0.0005, 0.02, 0.001, 2.0)
FAST = ThroughputParams(0.01, 0.0004, 0.01, 0.0005, 0.02, 0.001, 2.0)
CLUSTER = ClusterView((
    NodeView("t4-0", "t4", 4, price_per_hour=2.0),
    NodeView("t4-1", "t4", 4, price_per_hour=2.0),
    NodeView("a100-0", "a100", 8, price_per_hour=32.0),
))


def model(progress: float = 0.0, target: float | None = 1e6) -> GoodputModel:
    return GoodputModel({"t4": SLOW, "a100": FAST}, GradientStats(1.0, 200.0), LIMITS,
                        explored={"t4": 8, "a100": 8}, progress=progress,
                        target_progress=target)


def view(name: str, goodput: GoodputModel | None, alloc: Allocation | None = None,
         submit: float = 0.0, restarts: int = 0, restart_s: float = 30.0) -> JobView:
    return JobView(id=name, submit_time=submit, application="cifar10", model=goodput,
                   limits=LIMITS, allocation=alloc, restarts=restarts, max_replicas=64,
                   restart_s=restart_s)


@pytest.mark.parametrize("policy", [SiaPolicy(), ThriftyPolicy()], ids=["sia", "thrifty"])
def test_a_crowded_cluster_is_shared_and_full(policy) -> None:
    jobs = [view(f"j{i}", model()) for i in range(16)]
    result = policy.allocate(jobs, CLUSTER, now=0.0)
    assert sum(a.num_replicas for a in result.values()) == 16  # no GPU idle while jobs wait
    assert len(result) >= 8  # the concave objective spreads GPUs rather than piling them up


@pytest.mark.parametrize("policy", [SiaPolicy(), ThriftyPolicy()], ids=["sia", "thrifty"])
def test_a_lone_job_takes_the_fast_kind_at_scale(policy) -> None:
    alloc = policy.allocate([view("only", model())], CLUSTER, now=0.0)["only"]
    assert alloc.kind == "a100" and alloc.num_replicas == 8


def test_sia_discounts_moving_a_job_that_has_restarted_often() -> None:
    current = Allocation({"t4-0": 4}, "t4")
    fresh = view("fresh", model(), alloc=current, submit=0.0, restarts=0)
    weary = view("weary", model(), alloc=current, submit=0.0, restarts=19)
    # age 600 s, δ 30 s: factor (600 − 19·30)/(630) ≈ 0.05 makes every move worthless.
    assert SiaPolicy().allocate([weary], CLUSTER, now=600.0)["weary"] == current
    assert SiaPolicy().allocate([fresh], CLUSTER, now=600.0)["fresh"].kind == "a100"


def test_thrifty_leaves_a_job_about_to_finish_where_it_is() -> None:
    current = Allocation({"t4-0": 1}, "t4")
    ending = view("ending", model(progress=1e6 - 50, target=1e6), alloc=current, restart_s=120)
    long = view("long", model(progress=0.0, target=1e6), alloc=current, restart_s=120)
    assert ThriftyPolicy().allocate([ending], CLUSTER, now=600.0)["ending"] == current
    assert ThriftyPolicy().allocate([long], CLUSTER, now=600.0)["long"] != current


def test_thrifty_gives_the_contended_fast_gpus_to_the_shorter_job() -> None:
    small = ClusterView((NodeView("t4-0", "t4", 1), NodeView("a100-0", "a100", 1)))
    short = view("short", model(progress=9e5))
    long = view("long", model(progress=0.0))
    result = ThriftyPolicy().allocate([long, short], small, now=0.0)
    assert result["short"].kind == "a100" and result["long"].kind == "t4"


def test_thrifty_decides_by_its_predicted_finish_times() -> None:
    class Reversed(ThriftyPolicy):
        """Knows better: the job that has just started will end first."""

        def predicted_finish(self, jobs, goodput):
            finish = super().predicted_finish(jobs, goodput)
            return finish[::-1] if [j.id for j in jobs] == ["long", "short"] else finish

    small = ClusterView((NodeView("t4-0", "t4", 1), NodeView("a100-0", "a100", 1)))
    jobs = [view("long", model(progress=0.0)), view("short", model(progress=9e5))]
    result = Reversed().allocate(jobs, small, now=0.0)
    assert result["long"].kind == "a100" and result["short"].kind == "t4"


def test_thrifty_cost_weight_trades_speed_for_price() -> None:
    jobs = [view("j", model())]
    assert ThriftyPolicy().allocate(jobs, CLUSTER, now=0.0)["j"].kind == "a100"
    thrifty = ThriftyPolicy(cost_weight=0.05)  # the a100 node costs 16x the t4s per GPU
    assert thrifty.allocate(jobs, CLUSTER, now=0.0)["j"].kind == "t4"


def test_bad_knobs_are_named() -> None:
    with pytest.raises(ThriftyError, match="fairness"):
        ThriftyPolicy(fairness=0.5)
    with pytest.raises(ThriftyError, match="min_gain"):
        ThriftyPolicy(min_gain=0.5)
    with pytest.raises(ThriftyError, match="p must be negative"):
        SiaPolicy(p=1.0)


@pytest.mark.parametrize("name", ["sia", "thrifty"])
def test_a_heterogeneous_trace_runs_to_completion_deterministically(
    name: str, data_root: Path
) -> None:
    cluster = load_cluster("sia-hetero64")
    profiles = ProfileSet(data_root, cluster.profiles)
    full = load_workload(data_root / "sia/workloads/philly/workload-1.csv", profiles.applications)
    cut = [j for j in full.jobs if j.application != "imagenet"][:12]
    workload = Workload(full.name, full.path, tuple(cut))
    results = [simulate(workload, cluster, make_policy(name, seed=1), profiles, SimSettings())
               for _ in range(2)]
    first, again = ([(j.name, j.completion_time, j.restarts) for j in r.jobs] for r in results)
    assert first == again and all(c > s for (_, c, _), s in zip(first, [j.submit_time for j in cut],
                                                                strict=True))
    kinds = {k for j in results[0].jobs for k, s in j.gpu_seconds.items() if s > 0}
    assert len(kinds) >= 2  # heterogeneity-aware: jobs spread over kinds, not one


def test_thrifty_explores_a_whole_node_where_sia_doubles() -> None:
    fresh = model()
    newcomer = JobView(id="new", submit_time=0.0, application="cifar10", model=fresh,
                       limits=LIMITS, max_replicas=2, replica_limit=64)
    assert SiaPolicy().allocate([newcomer], CLUSTER, now=0.0)["new"].num_replicas == 2
    alloc = ThriftyPolicy().allocate([newcomer], CLUSTER, now=0.0)["new"]
    assert alloc.kind == "a100" and alloc.gpus == {"a100-0": 8}  # one node, never more
    small_limit = JobView(id="new", submit_time=0.0, model=fresh, limits=LIMITS, max_replicas=2,
                          replica_limit=4)
    assert ThriftyPolicy().allocate([small_limit], CLUSTER, now=0.0)["new"].num_replicas == 4

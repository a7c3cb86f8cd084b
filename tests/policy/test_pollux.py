"""Pollux's policy on hand-built goodput models: feasibility, restarts, fairness, determinism."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from thrifty.errors import ThriftyError
from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.pollux import PolluxPolicy
from thrifty.policy.registry import make_policy

LIMITS = BatchLimits(init_batch_size=128, max_batch_size=8192, min_local_bsz=16, max_local_bsz=256)
KINDS = ("aws", "rtx", "dgx-ext")
# Cheap gradient sync and noisy gradients: large batches on many GPUs stay efficient.
SCALES = ThroughputParams(0.05, 0.002, 0.01, 0.0005, 0.02, 0.001, 2.0)
# Sync costs several compute steps and gradients are clean: extra GPUs buy little.
STALLS = ThroughputParams(0.05, 0.002, 0.4, 0.05, 1.0, 0.1, 1.0)


def model(params: ThroughputParams, var: float = 200.0, sqr: float = 1.0) -> GoodputModel:
    return GoodputModel({k: params for k in KINDS}, GradientStats(sqr, var), LIMITS)


def nodes(kind: str, count: int, gpus: int) -> list[NodeView]:
    return [NodeView(f"{kind}-{i}", kind, gpus) for i in range(count)]


def job(
    name: str,
    goodput: GoodputModel | None,
    submit: float = 0.0,
    max_replicas: int = 64,
    allocation: Allocation | None = None,
    restarts: int = 0,
    service: float = 0.0,
) -> JobView:
    return JobView(
        id=name,
        submit_time=submit,
        model=goodput,
        limits=LIMITS,
        allocation=allocation,
        restarts=restarts,
        attained_service=service,
        max_replicas=max_replicas,
    )


def check_feasible(
    result: Mapping[str, Allocation], jobs: Sequence[JobView], cluster: ClusterView
) -> None:
    """Capacities, one kind per job, replica limits and interference avoidance."""
    by_name = {n.name: n for n in cluster.nodes}
    limits = {j.id: j.max_replicas for j in jobs}
    used = dict.fromkeys(by_name, 0)
    multi_node_jobs = dict.fromkeys(by_name, 0)
    for job_id, alloc in result.items():
        assert job_id in limits
        assert 1 <= alloc.num_replicas <= limits[job_id]
        assert alloc.num_nodes <= 16
        assert {by_name[n].gpu_kind for n in alloc.gpus} == {alloc.kind}
        for node, count in alloc.gpus.items():
            used[node] += count
            multi_node_jobs[node] += alloc.num_nodes > 1
    assert all(used[n] <= by_name[n].num_gpus for n in used)
    assert all(count <= 1 for count in multi_node_jobs.values())


def test_allocations_are_feasible_on_a_mixed_cluster() -> None:
    cluster = ClusterView(tuple(nodes("aws", 3, 4) + nodes("rtx", 1, 8) + nodes("dgx-ext", 1, 8)))
    jobs = [job(f"s{i}", model(SCALES), submit=i, max_replicas=16) for i in range(5)]
    jobs += [job("new", None, submit=9.0, max_replicas=1), job("stall", model(STALLS), 3.0, 4)]
    policy = PolluxPolicy(seed=1)
    result: Mapping[str, Allocation] = {}
    for round_ in range(3):
        result = policy.allocate(jobs, cluster, now=600.0 * (round_ + 1))
        check_feasible(result, jobs, cluster)
        for j in jobs:
            j.allocation = result.get(j.id)
    # Heterogeneity-unaware Pollux caps a job at the GPUs of the smallest kind (8 here).
    assert all(a.num_replicas <= 8 for a in result.values())
    assert len(result) == len(jobs)  # with p = -1 nobody is left out while GPUs suffice
    assert sum(a.num_replicas for a in result.values()) >= 28  # nearly all 32 GPUs in use


def test_interference_avoidance_with_many_multi_node_jobs() -> None:
    cluster = ClusterView(tuple(nodes("aws", 8, 2)))  # small nodes: big jobs must span several
    jobs = [job(f"j{i}", model(SCALES, var=2000.0), submit=i, max_replicas=8) for i in range(4)]
    policy = PolluxPolicy(seed=3)
    result = policy.allocate(jobs, cluster, now=3600.0)
    check_feasible(result, jobs, cluster)
    assert any(a.num_nodes > 1 for a in result.values())


def test_young_job_keeps_its_allocation_when_a_move_gains_little() -> None:
    cluster = ClusterView(tuple(nodes("aws", 1, 4)))
    current = Allocation({"aws-0": 1}, "aws")
    stall = model(STALLS, var=20.0)
    # Check the premise: two GPUs are faster, but by less than the young job's restart factor.
    one, two = (float(stall.best("aws", 1, r)[0]) for r in (1, 2))
    assert 1.05 < two / one < 1.4

    young = job("young", stall, submit=0.0, max_replicas=2, allocation=current)
    assert PolluxPolicy(seed=0).allocate([young], cluster, now=60.0)["young"] == current
    # An old job pays almost nothing to restart, so the same gain moves it.
    old = job("old", stall, submit=0.0, max_replicas=2, allocation=current)
    assert PolluxPolicy(seed=0).allocate([old], cluster, now=1e6)["old"].num_replicas == 2
    # An often-restarted job is held back even when old.
    tired = job("tired", stall, submit=0.0, max_replicas=2, allocation=current, restarts=5)
    assert PolluxPolicy(seed=0).allocate([tired], cluster, now=150.0)["tired"] == current


def test_better_scaling_job_gets_more_gpus() -> None:
    cluster = ClusterView(tuple(nodes("aws", 4, 4)))
    jobs = [
        job("scales", model(SCALES, var=2000.0), max_replicas=16),
        job("stalls", model(STALLS, var=5.0), max_replicas=16),
    ]
    result = PolluxPolicy(seed=0).allocate(jobs, cluster, now=3600.0)
    check_feasible(result, jobs, cluster)
    assert result["scales"].num_replicas > result["stalls"].num_replicas >= 1


def test_jobs_without_a_model_share_gpus_in_proportion_to_replicas() -> None:
    cluster = ClusterView(tuple(nodes("aws", 2, 4)))
    jobs = [job(f"n{i}", None, submit=i, max_replicas=4) for i in range(2)]
    result = PolluxPolicy(seed=0).allocate(jobs, cluster, now=60.0)
    # speedup = replicas / fair share: both jobs fill their limit, nothing is left idle.
    assert sorted(a.num_replicas for a in result.values()) == [4, 4]


def run_rounds(policy: PolluxPolicy, rounds: int) -> list[dict[str, dict[str, int]]]:
    cluster = ClusterView(tuple(nodes("aws", 4, 4)))
    jobs = [
        job(f"j{i}", model(SCALES, var=50.0 * (i + 1)), submit=i, max_replicas=8) for i in range(6)
    ]
    history = []
    for r in range(rounds):
        result = policy.allocate(jobs, cluster, now=60.0 * (r + 1))
        history.append({k: dict(a.gpus) for k, a in sorted(result.items())})
        for j in jobs:
            j.allocation = result.get(j.id)
            j.attained_service += 60.0 * (j.allocation.num_replicas if j.allocation else 0)
    return history


def test_same_seed_same_allocations() -> None:
    assert run_rounds(PolluxPolicy(seed=7), 3) == run_rounds(PolluxPolicy(seed=7), 3)


def test_jobs_come_and_go_between_rounds() -> None:
    cluster = ClusterView(tuple(nodes("aws", 2, 4)))
    policy = make_policy("pollux", seed=0)
    assert policy.allocate([], cluster, now=0.0) == {}
    first = [job("a", model(SCALES), max_replicas=4), job("b", None, max_replicas=1)]
    result = policy.allocate(first, cluster, now=60.0)
    second = [
        job("b", model(STALLS), max_replicas=2, allocation=result.get("b")),
        job("c", None, submit=70.0, max_replicas=1),
    ]
    result = policy.allocate(second, cluster, now=120.0)
    assert set(result) == {"b", "c"}
    check_feasible(result, second, cluster)


def test_settings_are_validated() -> None:
    for bad in ({"population": 0}, {"generations": -1}, {"restart_penalty_s": -1.0}):
        with pytest.raises(ThriftyError):
            PolluxPolicy(**bad)  # type: ignore[arg-type]
    policy = PolluxPolicy()
    assert (policy.name, policy.adaptive, policy.heterogeneity_aware) == ("pollux", True, False)


def test_runs_in_the_simulator_on_the_mixed_cluster(data_root: Path) -> None:
    from thrifty.sim.cluster import load_cluster
    from thrifty.sim.engine import simulate
    from thrifty.sim.profiles import ProfileSet
    from thrifty.sim.workload import TraceJob, Workload

    cluster = load_cluster("sia-hetero64")
    specs = (
        TraceJob("bert-0", 0.0, "bert", 1, 12),
        TraceJob("ncf-0", 30.0, "ncf", 1, 32768),
        TraceJob("bert-1", 90.0, "bert", 1, 12),
    )
    result = simulate(
        Workload("mini", Path("mini.csv"), specs),
        cluster,
        PolluxPolicy(seed=0, population=30, generations=20),
        ProfileSet(data_root, cluster.profiles),
    )
    assert all(j.completion_time > j.submit_time for j in result.jobs)

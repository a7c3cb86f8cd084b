from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.gavel import GavelFtfPolicy, GavelPolicy
from thrifty.policy.gavel_programs import (
    finish_time_ratios,
    isolated_throughputs,
    max_sum_throughput,
    min_max_finish_time_fairness,
)
from thrifty.policy.registry import make_policy


class FakeOracle:
    """Steps per second per GPU kind, whatever the placement; a fixed number of steps left."""

    def __init__(self, rates: Mapping[str, float], steps: float = 1000.0):
        self.rates = dict(rates)
        self.steps = steps

    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float | None:
        rate = self.rates.get(kind, 0.0)
        return 1.0 / rate if rate > 0 else None

    def remaining_steps(self, batch_size: int) -> float:
        return self.steps


def job(name: str, rates: Mapping[str, float], gpus: int = 1, submit: float = 0.0) -> JobView:
    return JobView(
        id=name,
        submit_time=submit,
        application="fake",
        requested_replicas=gpus,
        requested_batch_size=32,
        oracle=FakeOracle(rates),
    )


def cluster(**kinds: tuple[int, int]) -> ClusterView:
    """kind=(nodes, GPUs per node)."""
    return ClusterView(tuple(
        NodeView(f"{kind}-{i}", kind, gpus)
        for kind, (count, gpus) in sorted(kinds.items())
        for i in range(count)
    ))


def rounds(policy: GavelPolicy | GavelFtfPolicy, jobs: list[JobView], view: ClusterView,
           count: int) -> list[dict[str, Allocation]]:
    return [policy.allocate(jobs, view, policy.round_seconds * (r + 1)) for r in range(count)]


def test_the_lp_gives_the_faster_kind_to_the_job_that_gains_most() -> None:
    # Job 0 runs 4x faster on kind 1, job 1 only 1.5x: kind 1 goes to job 0.
    tput = np.array([[1.0, 4.0], [1.0, 1.5]])
    for normalized in (False, True):
        x = max_sum_throughput(tput, np.ones(2), np.array([1.0, 1.0]), normalized=normalized)
        np.testing.assert_allclose(x, [[0.0, 1.0], [1.0, 0.0]], atol=1e-6)


def test_identical_jobs_get_identical_time_fractions() -> None:
    x = max_sum_throughput(np.full((3, 1), 2.0), np.ones(3), np.array([2.0]))
    np.testing.assert_allclose(x[:, 0], [2 / 3] * 3, atol=1e-5)


def test_the_lp_never_places_a_job_on_a_kind_too_small_or_unable_to_run_it() -> None:
    tput = np.array([[5.0, 1.0], [0.0, 1.0]])
    x = max_sum_throughput(tput, np.array([4.0, 1.0]), np.array([2.0, 8.0]))
    assert x[0, 0] == 0.0 and x[1, 0] == 0.0
    assert x[0, 1] == pytest.approx(1.0) and x[1, 1] == pytest.approx(1.0)


def test_allocations_respect_capacity_and_use_one_kind_each() -> None:
    view = cluster(slow=(2, 4), fast=(1, 4))
    sizes = [1, 2, 4, 3, 2, 1, 4, 2]
    jobs = [
        job(f"j{i}", {"slow": 1.0 + i % 3, "fast": 2.0 + 3 * (i % 2)}, gpus=size, submit=10.0 * i)
        for i, size in enumerate(sizes)
    ]
    capacity = {n.name: n.num_gpus for n in view.nodes}
    kind_of = {n.name: n.gpu_kind for n in view.nodes}
    policy = GavelPolicy()
    for allocations in rounds(policy, jobs, view, 12):
        used: Counter[str] = Counter()
        for job_id, alloc in allocations.items():
            assert all(kind_of[node] == alloc.kind for node in alloc.gpus)
            assert alloc.num_replicas == sizes[int(job_id[1:])]
            used.update(alloc.gpus)
        assert all(used[node] <= capacity[node] for node in used)
        assert sum(used.values()) >= 10  # work-conserving: little is left idle


def test_the_round_mechanism_serves_jobs_in_proportion_to_their_time_fractions() -> None:
    view = cluster(fast=(1, 1), slow=(1, 1))
    jobs = [
        job("a", {"fast": 4.0, "slow": 1.0}),
        job("b", {"fast": 2.0, "slow": 1.0}),
        job("c", {"fast": 2.0, "slow": 1.0}),
    ]
    policy = GavelPolicy()
    served: Counter[tuple[str, str]] = Counter()
    count = 20
    for allocations in rounds(policy, jobs, view, count):
        served.update((job_id, alloc.kind) for job_id, alloc in allocations.items())
    x = policy.last_fractions
    assert x["a"]["fast"] == pytest.approx(1.0)
    assert x["b"]["slow"] == pytest.approx(0.5) and x["c"]["slow"] == pytest.approx(0.5)
    for job_id, kinds in x.items():
        for kind, fraction in kinds.items():
            assert abs(served[job_id, kind] - fraction * count) <= 1


def test_allocations_hold_between_rounds_and_rounds_fall_on_multiples_of_the_round() -> None:
    view = cluster(fast=(1, 2))
    jobs = [job("a", {"fast": 1.0}), job("b", {"fast": 1.0}), job("c", {"fast": 1.0})]
    policy = GavelPolicy(round_seconds=360.0)
    assert policy.allocate(jobs, view, 60.0) == {}  # the first round is at 360 s
    first = policy.allocate(jobs, view, 360.0)
    assert len(first) == 2
    for now in (420.0, 480.0, 660.0):
        assert policy.allocate(jobs, view, now) == first
    # A job that left is dropped at once; its GPUs stay idle until the next round.
    gone = next(iter(first))
    rest = [j for j in jobs if j.id != gone]
    assert policy.allocate(rest, view, 700.0) == {k: v for k, v in first.items() if k != gone}
    later = policy.allocate(rest, view, 720.0)
    assert set(later) == {j.id for j in rest}


def test_a_job_keeps_its_gpus_when_it_stays_on_the_same_kind() -> None:
    view = cluster(fast=(2, 4))
    jobs = [job("big", {"fast": 1.0}, gpus=4), job("small", {"fast": 1.0}, gpus=2)]
    policy = GavelPolicy()
    first, second, third = rounds(policy, jobs, view, 3)
    assert first == second == third


def test_ftf_equalises_finish_time_ratios_better_than_max_sum_throughput() -> None:
    tput = np.array([[4.0, 1.0], [2.0, 1.5], [1.0, 1.0]])
    sf, capacity = np.ones(3), np.array([1.0, 1.0])
    steps = np.array([4000.0, 2000.0, 1000.0])
    elapsed = np.zeros(3)
    isolated = steps / isolated_throughputs(tput, sf, capacity)
    ftf = min_max_finish_time_fairness(tput, sf, capacity, elapsed, steps, isolated)
    msum = max_sum_throughput(tput, sf, capacity)
    rho_ftf = finish_time_ratios(ftf, tput, elapsed, steps, isolated)
    rho_msum = finish_time_ratios(msum, tput, elapsed, steps, isolated)
    assert np.isfinite(rho_ftf).all()
    assert rho_ftf.max() < rho_msum.max()
    assert rho_ftf.max() - rho_ftf.min() < rho_msum.max() - rho_msum.min()
    assert rho_ftf.max() <= 1.0 + 1e-3  # never worse than the equal split


def test_ftf_serves_a_job_that_max_sum_throughput_starves() -> None:
    view = cluster(fast=(1, 1))
    jobs = [job("quick", {"fast": 2.0}), job("slow", {"fast": 1.0})]
    starved = Counter(j for a in rounds(GavelPolicy(), jobs, view, 10) for j in a)
    fair = Counter(j for a in rounds(GavelFtfPolicy(), jobs, view, 10) for j in a)
    assert starved["slow"] == 0 and starved["quick"] == 10
    assert fair["slow"] >= 3 and fair["quick"] >= 3


def test_the_registry_builds_both_variants() -> None:
    assert make_policy("gavel").name == "gavel"
    ftf = make_policy("gavel-ftf")
    assert ftf.name == "gavel-ftf" and not ftf.adaptive and ftf.heterogeneity_aware


def test_a_small_workload_completes_on_the_heterogeneous_cluster(data_root: Path) -> None:
    from thrifty.sim.cluster import load_cluster
    from thrifty.sim.engine import simulate
    from thrifty.sim.profiles import ProfileSet
    from thrifty.sim.workload import TraceJob, Workload

    specs = (
        TraceJob("cifar10-0", 0.0, "cifar10", 8, 2048),
        TraceJob("cifar10-1", 30.0, "cifar10", 16, 4096),
        TraceJob("bert-2", 100.0, "bert", 8, 384),
    )
    result = simulate(
        Workload("small", Path("small.csv"), specs),
        load_cluster("sia-hetero64"),
        GavelPolicy(),
        ProfileSet(data_root, "sia"),
    )
    for record in result.jobs:
        assert record.completion_time > 360.0  # nothing starts before the first round
        assert record.stalled_seconds == 0.0
    # The 16 A100s are the fastest kind for all three but cannot hold them at once: the job that
    # gains most per GPU runs there undisturbed, the others move there as soon as it frees up.
    first, *others = result.jobs
    assert set(first.gpu_seconds) == {"dgx-ext"} and first.restarts == 0
    assert all("dgx-ext" in r.gpu_seconds and r.restarts == 1 for r in others)

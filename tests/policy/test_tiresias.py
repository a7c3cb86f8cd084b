from __future__ import annotations

import random

import pytest

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.tiresias import TiresiasPolicy

HOUR = 3600.0


def cluster(nodes: int, gpus: int = 4) -> ClusterView:
    return ClusterView(tuple(NodeView(f"n{i}", "aws", gpus) for i in range(nodes)))


def job(
    name: str,
    gpus: int,
    submit: float = 0.0,
    service: float = 0.0,
    allocation: Allocation | None = None,
) -> JobView:
    return JobView(
        id=name, submit_time=submit, requested_replicas=gpus, max_replicas=gpus,
        requested_batch_size=128, attained_service=service, allocation=allocation,
    )


def used(allocs: dict[str, Allocation]) -> dict[str, int]:
    total: dict[str, int] = {}
    for alloc in allocs.values():
        for node, count in alloc.gpus.items():
            total[node] = total.get(node, 0) + count
    return total


def test_jobs_are_demoted_once_their_service_crosses_the_threshold() -> None:
    policy = TiresiasPolicy()
    view = cluster(4)
    policy.allocate([job("a", 4, service=15.9 * HOUR)], view, 60.0)
    assert policy.queue_of("a") == 0
    policy.allocate([job("a", 4, service=16 * HOUR)], view, 120.0)
    assert policy.queue_of("a") == 1
    # No promotion back: starvation handling is off, as in the reference setting.
    policy.allocate([job("a", 4, service=16 * HOUR)], view, 180.0)
    assert policy.queue_of("a") == 1


def test_a_short_job_preempts_a_long_one_of_a_lower_queue() -> None:
    policy = TiresiasPolicy()
    view = cluster(1)
    long_alloc = Allocation({"n0": 4}, "aws")
    first = policy.allocate([job("long", 4, service=20 * HOUR, allocation=long_alloc)], view, 60)
    assert first["long"].same_as(long_alloc)
    jobs = [job("long", 4, service=20 * HOUR, allocation=long_alloc), job("short", 4, submit=90)]
    second = policy.allocate(jobs, view, 120.0)
    assert "long" not in second
    assert second["short"].num_replicas == 4


def test_fifo_within_a_queue_by_arrival_to_it() -> None:
    policy = TiresiasPolicy()
    view = cluster(1)
    # Both in the top queue: the earlier submission runs, the later one waits.
    out = policy.allocate([job("late", 4, submit=10), job("early", 4, submit=5)], view, 60)
    assert set(out) == {"early"}
    # Once demoted, "early" queues behind "late", which is still in the top queue.
    jobs = [job("late", 4, submit=10), job("early", 4, submit=5, service=17 * HOUR)]
    assert set(policy.allocate(jobs, view, 120.0)) == {"late"}


def test_a_job_that_does_not_fit_is_skipped_not_blocking() -> None:
    policy = TiresiasPolicy()
    view = cluster(2)
    running = Allocation({"n0": 4, "n1": 2}, "aws")
    jobs = [job("big", 6, allocation=running), job("wide", 4, submit=1), job("small", 2, submit=2)]
    out = policy.allocate(jobs, view, 60.0)
    assert set(out) == {"big", "small"}
    assert out["big"].same_as(running)  # running jobs keep their placement: no restart
    assert out["small"].gpus == {"n1": 2}


def test_new_jobs_take_the_nodes_with_the_most_free_gpus() -> None:
    policy = TiresiasPolicy()
    view = cluster(3)
    jobs = [
        job("a", 3, allocation=Allocation({"n0": 3}, "aws")),
        job("b", 2, allocation=Allocation({"n1": 2}, "aws")),
        job("c", 2, submit=5),
    ]
    out = policy.allocate(jobs, view, 60.0)
    assert out["c"].gpus == {"n2": 2}  # n2 has 4 free, more than n0 (1) or n1 (2)


def test_never_over_allocates_and_grants_exactly_the_request() -> None:
    rng = random.Random(7)
    policy = TiresiasPolicy()
    view = cluster(4)
    allocs: dict[str, Allocation] = {}
    for round_ in range(30):
        jobs = [
            job(f"j{i}", rng.choice([1, 2, 3, 4, 6, 8]), submit=float(i),
                service=rng.random() * 40 * HOUR, allocation=allocs.get(f"j{i}"))
            for i in range(12)
        ]
        # Keep each job's request stable across rounds.
        jobs = [
            j if j.allocation is None else job(j.id, j.allocation.num_replicas, j.submit_time,
                                               j.attained_service, j.allocation)
            for j in jobs
        ]
        allocs = policy.allocate(jobs, view, 60.0 * (round_ + 1))
        assert all(count <= 4 for count in used(allocs).values())
        wants = {j.id: j.requested_replicas for j in jobs}
        assert all(a.num_replicas == wants[k] for k, a in allocs.items())


def test_more_thresholds_give_more_queues() -> None:
    policy = TiresiasPolicy(queue_thresholds=(HOUR, 10 * HOUR))
    view = cluster(4)
    jobs = [job("a", 1, service=0.5 * HOUR), job("b", 1, service=2 * HOUR),
            job("c", 1, service=11 * HOUR)]
    policy.allocate(jobs, view, 60.0)
    assert [policy.queue_of(n) for n in "abc"] == [0, 1, 2]


@pytest.mark.parametrize("bad", [(0.0,), (10.0, 5.0), (5.0, 5.0)])
def test_thresholds_must_be_positive_and_increasing(bad: tuple[float, ...]) -> None:
    with pytest.raises(ThriftyError):
        TiresiasPolicy(queue_thresholds=bad)

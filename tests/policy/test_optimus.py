from __future__ import annotations

import random
from collections.abc import Callable

from thrifty.goodput import BatchLimits
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.optimus import OptimusPolicy


class FakeOracle:
    """Step time as a function of the GPU count only; a fixed number of steps left."""

    def __init__(self, step: Callable[[int], float], remaining: float):
        self.step = step
        self.remaining = remaining
        self.placements: list[tuple[int, ...]] = []

    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float:
        self.placements.append(placement)
        return self.step(sum(placement))

    def remaining_steps(self, batch_size: int) -> float:
        return self.remaining


def cluster(nodes: int, gpus: int = 4) -> ClusterView:
    return ClusterView(tuple(NodeView(f"n{i}", "aws", gpus) for i in range(nodes)))


def job(
    name: str,
    oracle: FakeOracle,
    submit: float = 0.0,
    batch: int = 1024,
    min_local: int = 1,
    application: str = "app",
    allocation: Allocation | None = None,
) -> JobView:
    return JobView(
        id=name, submit_time=submit, application=application, requested_replicas=1,
        max_replicas=1, requested_batch_size=batch, allocation=allocation, oracle=oracle,
        limits=BatchLimits(init_batch_size=min_local, max_batch_size=max(batch, min_local),
                           min_local_bsz=min_local),
    )


def counts(allocs: dict[str, Allocation]) -> dict[str, int]:
    return {k: a.num_replicas for k, a in allocs.items()}


def test_the_next_gpu_goes_to_the_largest_marginal_gain() -> None:
    three = ClusterView((NodeView("n0", "aws", 3),))
    # fast: 1 -> 2 GPUs saves 0.5 s per step with 100 steps left, a gain of 50 s.
    fast = FakeOracle(lambda r: 1.0 / r, remaining=100)
    # slow saves only 0.1 s per step, but with 1000 steps left gains 100 s: it gets the GPU.
    slow = FakeOracle(lambda r: 1.0 - 0.1 * (r - 1), remaining=1000)
    jobs = [job("fast", fast), job("slow", slow, submit=1)]
    assert counts(OptimusPolicy().allocate(jobs, three, 0.0)) == {"fast": 1, "slow": 2}
    # With 400 steps left slow gains 40 s, less than fast's 50 s.
    slow.remaining = 400
    assert counts(OptimusPolicy().allocate(jobs, three, 0.0)) == {"fast": 2, "slow": 1}


def test_every_job_first_gets_one_gpu_in_submission_order() -> None:
    flat = FakeOracle(lambda r: 1.0, remaining=10)
    jobs = [job(f"j{i}", flat, submit=float(10 - i)) for i in range(6)]
    out = OptimusPolicy().allocate(jobs, cluster(1), 0.0)
    assert set(out) == {"j5", "j4", "j3", "j2"}  # the four submitted first
    assert all(a.num_replicas == 1 for a in out.values())


def test_max_replicas_follow_the_batch_and_single_gpu_applications() -> None:
    linear = FakeOracle(lambda r: 1.0 / r, remaining=1000)
    view = cluster(4)
    # 64 samples with at least 32 per GPU: two GPUs at most, whatever the gain.
    out = OptimusPolicy().allocate([job("capped", linear, batch=64, min_local=32)], view, 0)
    assert counts(out) == {"capped": 2}
    out = OptimusPolicy().allocate([job("rec", linear, application="ncf")], view, 0.0)
    assert counts(out) == {"rec": 1}


def test_no_gpu_is_given_where_it_does_not_help() -> None:
    slower = FakeOracle(lambda r: 1.0 + 0.1 * r, remaining=1000)
    out = OptimusPolicy().allocate([job("a", slower)], cluster(2), 0.0)
    assert counts(out) == {"a": 1}


def test_speed_is_predicted_on_packed_placements() -> None:
    linear = FakeOracle(lambda r: 1.0 / r, remaining=1000)
    OptimusPolicy().allocate([job("a", linear)], cluster(3), 0.0)
    assert (4, 2) in linear.placements and (4, 4, 1) in linear.placements


def test_unchanged_counts_keep_their_placement_and_others_take_the_most_free_nodes() -> None:
    linear = FakeOracle(lambda r: 1.0 / r, remaining=1000)
    flat = FakeOracle(lambda r: 1.0, remaining=10)
    kept = Allocation({"n1": 1}, "aws")
    jobs = [job("flat", flat, allocation=kept), job("grow", linear, submit=1,
                                                    allocation=Allocation({"n1": 1}, "aws"))]
    out = OptimusPolicy().allocate(jobs, cluster(2), 0.0)
    assert out["flat"].same_as(kept)
    assert out["grow"].num_replicas == 7
    assert out["grow"].gpus == {"n0": 4, "n1": 3}


def test_never_over_allocates() -> None:
    rng = random.Random(3)
    view = cluster(4)
    policy = OptimusPolicy()
    allocs: dict[str, Allocation] = {}
    for round_ in range(20):
        jobs = []
        for i in range(rng.randint(1, 12)):
            alpha = rng.uniform(0.2, 1.0)
            oracle = FakeOracle(lambda r, a=alpha: 1.0 / r**a, rng.uniform(10, 1000))
            jobs.append(job(f"j{i}", oracle, submit=float(i), batch=rng.choice([64, 512, 4096]),
                            min_local=16, allocation=allocs.get(f"j{i}")))
        allocs = policy.allocate(jobs, view, 60.0 * round_)
        per_node: dict[str, int] = {}
        for alloc in allocs.values():
            for node, count in alloc.gpus.items():
                per_node[node] = per_node.get(node, 0) + count
        assert all(count <= 4 for count in per_node.values())
        limit = {j.id: j.requested_batch_size // 16 for j in jobs}  # type: ignore[operator]
        assert all(a.num_replicas <= limit[k] for k, a in allocs.items())
        # Every job gets a GPU while there are enough to go round.
        assert len(allocs) == min(len(jobs), 16)


def test_without_an_oracle_or_a_model_a_job_keeps_one_gpu() -> None:
    blind = JobView(id="blind", submit_time=0.0, requested_batch_size=512,
                    limits=BatchLimits(init_batch_size=64, max_batch_size=512))
    assert counts(OptimusPolicy().allocate([blind], cluster(2), 0.0)) == {"blind": 1}

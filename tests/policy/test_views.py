from __future__ import annotations

from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, NodeView
from thrifty.policy.views import check_answer, job_view

LIMITS = BatchLimits(init_batch_size=128, max_batch_size=1024, min_local_bsz=32, max_local_bsz=256)
CLUSTER = ClusterView((NodeView("a0", "a100", 4), NodeView("a1", "a100", 4),
                       NodeView("t0", "t4", 4)))


def model(explored: dict[str, int]) -> GoodputModel:
    params = ThroughputParams(0.1, 0.01, 0.05, 0.01, 0.02, 0.01, 1.5)
    return GoodputModel(throughput={"a100": params}, grad=GradientStats(1.0, 10.0),
                        limits=LIMITS, explored=explored)


def test_an_adaptive_job_grows_to_twice_what_it_ran_with_and_never_past_its_largest_batch():
    view = job_view(id="j", submit_time=0.0, model=model({"a100": 3, "t4": 1}))
    assert view.limits == LIMITS  # taken from the model
    assert view.max_replicas == 6  # twice the most replicas run with on any kind
    assert view.replica_limit == 32  # 1024 / 32
    far = job_view(id="j", submit_time=0.0, model=model({"a100": 20}))
    assert far.max_replicas == 32


def test_a_job_that_has_not_run_gets_one_replica_and_a_ceiling_bounds_both():
    fresh = job_view(id="j", submit_time=0.0, limits=LIMITS)
    assert (fresh.max_replicas, fresh.replica_limit) == (1, 32)
    unknown = job_view(id="j", submit_time=0.0, replica_ceiling=8)
    assert (unknown.max_replicas, unknown.replica_limit) == (1, 8)
    capped = job_view(id="j", submit_time=0.0, model=model({"a100": 8}), replica_ceiling=12)
    assert (capped.max_replicas, capped.replica_limit) == (12, 12)
    nothing = job_view(id="j", submit_time=0.0)
    assert (nothing.max_replicas, nothing.replica_limit) == (1, None)


def test_fixed_replicas_and_minimums():
    rigid = job_view(id="j", submit_time=0.0, limits=LIMITS, fixed_replicas=6, replica_ceiling=4)
    assert (rigid.max_replicas, rigid.replica_limit) == (4, 4)
    floor = job_view(id="j", submit_time=0.0, min_replicas=3, replica_ceiling=8)
    assert floor.max_replicas == 3  # always at least its minimum
    assert floor.min_replicas == 3


def test_the_rest_of_the_view_is_passed_through():
    alloc = Allocation({"a0": 2}, "a100")
    view = job_view(id="j", submit_time=5.0, application="app", owner="ml/ann", allocation=alloc,
                    restarts=2, attained_service=30.0, requested_replicas=4,
                    requested_batch_size=256, restart_s=12.0, deadline=99.0)
    assert (view.id, view.submit_time, view.application, view.owner) == ("j", 5.0, "app", "ml/ann")
    assert (view.allocation, view.restarts, view.attained_service) == (alloc, 2, 30.0)
    assert (view.requested_replicas, view.requested_batch_size) == (4, 256)
    assert (view.restart_s, view.deadline) == (12.0, 99.0)


def test_a_sound_answer_passes_unchanged():
    views = [job_view(id="a", submit_time=0.0, replica_ceiling=8, model=model({"a100": 4}))]
    answer = {"a": Allocation({"a0": 4, "a1": 2}, "a100")}
    checked = check_answer(answer, views, CLUSTER)
    assert checked.errors == ()
    assert checked.allocations == answer


def test_faults_of_a_policy_are_errors_in_the_order_the_simulator_raised_them():
    views = [job_view(id="a", submit_time=0.0), job_view(id="b", submit_time=0.0)]
    answer = {
        "ghost": Allocation({"a0": 1}, "a100"),
        "a": Allocation({"a0": 4, "zz": 1}, "a100"),
        "b": Allocation({"a0": 1, "t0": 1}, "a100"),
    }
    checked = check_answer(answer, views, CLUSTER)
    assert checked.errors == (
        "allocated GPUs to unknown or inactive job 'ghost'",
        "used unknown node 'zz'",
        "mixed GPU kinds in the allocation of 'b'",
        "over-allocated node 'a0' (5 GPUs)",
    )
    assert "ghost" not in checked.allocations


def test_what_a_job_cannot_take_is_trimmed_or_dropped():
    views = [
        job_view(id="kind", submit_time=0.0, replica_ceiling=8),
        job_view(id="big", submit_time=0.0, replica_ceiling=3),
        job_view(id="small", submit_time=0.0, min_replicas=2, replica_ceiling=8),
        job_view(id="empty", submit_time=0.0, replica_ceiling=8),
    ]
    answer = {
        "kind": Allocation({"t0": 1}, "t4"),
        "big": Allocation({"a0": 2, "a1": 2}, "a100"),
        "small": Allocation({"t0": 1}, "t4"),
        "empty": Allocation({}, "a100"),
    }
    checked = check_answer(answer, views, CLUSTER, {"kind": ("a100",), "big": None})
    assert checked.errors == ()
    assert checked.allocations == {"big": Allocation({"a0": 2, "a1": 1}, "a100")}


def test_capabilities_default_to_off():
    class Plain(BasePolicy):
        name = "plain"

    class Sia(BasePolicy):
        name = "sia-like"
        profiles_on_arrival = True

    assert not Plain().profiles_on_arrival
    assert Sia().profiles_on_arrival
    assert not Sia().needs_oracle

"""Team quotas cap any policy's answer, keeping running jobs where they are first."""

from __future__ import annotations

from thrifty.policy.base import Allocation
from thrifty.policy.placement import shrink
from thrifty.policy.quota import QuotaJob, enforce_quotas


def alloc(**gpus: int) -> Allocation:
    return Allocation(gpus, "t4")


def test_no_quota_changes_nothing() -> None:
    wanted = {"a": alloc(n1=4)}
    assert enforce_quotas(wanted, [QuotaJob("a", "x", 0, 0.0)], {}) == wanted


def test_running_jobs_keep_their_gpus_and_newcomers_are_shrunk_or_wait() -> None:
    jobs = [
        QuotaJob("old", "vision", 0, 0.0, current=alloc(n1=2)),
        QuotaJob("elastic", "vision", 5, 1.0, min_replicas=1),
        QuotaJob("rigid", "vision", 9, 2.0, min_replicas=2, elastic=False),
        QuotaJob("other-team", "nlp", 0, 3.0),
    ]
    wanted = {"old": alloc(n1=2), "elastic": alloc(n2=2, n3=1), "rigid": alloc(n4=2),
              "other-team": alloc(n5=4)}
    out = enforce_quotas(wanted, jobs, {"vision": {"t4": 4}})
    assert out["old"] == alloc(n1=2)  # kept first although its priority is lowest
    assert "rigid" in out and out["rigid"].num_replicas == 2  # priority 9 goes next
    assert "elastic" not in out  # nothing left for it
    assert out["other-team"].num_replicas == 4  # not limited
    out = enforce_quotas(wanted, jobs, {"vision": {"t4": 5}})
    assert out["elastic"].num_replicas == 1 and "rigid" in out


def test_shrink_takes_nodes_in_order() -> None:
    assert shrink(alloc(b=2, a=3), 4) == alloc(a=3, b=1)

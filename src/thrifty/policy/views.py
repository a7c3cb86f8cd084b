"""What a policy is shown of a job, and what of its answer may be applied: one home for both.

The simulator (a simulated job's own observations) and the live scheduler (a stored job and its
newest report) hold different state, yet they must show a policy the same `JobView` of the same
job and hold its answer to the same rules: a policy tuned in simulation would otherwise meet a
different world on a real cluster. Both therefore build views with `job_view` and check answers
with `check_answer`; neither computes a growth cap or a replica limit of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from thrifty.goodput import BatchLimits, GoodputModel, growth_cap
from thrifty.policy.base import Allocation, ClusterView, JobView, Oracle
from thrifty.policy.placement import shrink

__all__ = ["Checked", "check_answer", "job_view"]


def job_view(
    *,
    id: str,
    submit_time: float,
    application: str = "",
    owner: str = "",
    model: GoodputModel | None = None,
    limits: BatchLimits | None = None,
    allocation: Allocation | None = None,
    restarts: int = 0,
    attained_service: float = 0.0,
    min_replicas: int = 0,
    replica_ceiling: int | None = None,
    fixed_replicas: int | None = None,
    requested_replicas: int | None = None,
    requested_batch_size: int | None = None,
    restart_s: float = 30.0,
    deadline: float | None = None,
    oracle: Oracle | None = None,
) -> JobView:
    """The view of one active job, with its replica bounds derived by one set of rules.

    - A job of `fixed_replicas` (a rigid job, or an application kept at one size) may use
      exactly that many, now and ever.
    - An adaptive job with batch `limits` grows by Pollux's rule: now at most twice the replicas
      it has run with on any kind (`model.explored`; one before it has run), and ever at most as
      many as its largest batch can feed at the smallest per-GPU batch.
    - Without limits (no model reported yet) it may use one replica now and has no limit of its
      own.

    `replica_ceiling` (the owner's maximum, or the cluster's size) bounds both, and the job may
    always be given `min_replicas`. `limits` defaults to the model's. `deadline` is on the same
    clock as the policy's `now`; `attained_service` is in GPU-seconds; `restart_s` is the
    estimated seconds one restart costs.
    """
    if limits is None and model is not None:
        limits = model.limits
    cap: int
    limit: int | None
    if fixed_replicas is not None:
        cap = limit = fixed_replicas
    elif limits is not None:
        explored = max(model.explored.values(), default=0) if model is not None else 0
        cap, limit = growth_cap(explored, limits), limits.max_replicas()
    else:
        cap, limit = 1, None
    if replica_ceiling is not None:
        cap = min(cap, replica_ceiling)
        limit = replica_ceiling if limit is None else min(limit, replica_ceiling)
    return JobView(
        id=id,
        submit_time=submit_time,
        application=application,
        owner=owner,
        model=model,
        limits=limits,
        allocation=allocation,
        restarts=restarts,
        attained_service=attained_service,
        min_replicas=min_replicas,
        max_replicas=max(cap, min_replicas),
        replica_limit=limit,
        requested_replicas=requested_replicas,
        requested_batch_size=requested_batch_size,
        restart_s=restart_s,
        deadline=deadline,
        oracle=oracle,
    )


@dataclass(frozen=True)
class Checked:
    """A policy's answer held to the rules.

    `errors` are what only a faulty policy produces (GPUs for a job it was not shown, a node that
    does not exist, kinds mixed within one allocation, a node given more GPUs than it has); each
    reads as the rest of a sentence starting "policy NAME ...". The simulator raises on the first
    one, since a run with a faulty policy means nothing; the live scheduler logs them and runs on.

    `allocations` is what may be applied live: the answer without jobs the policy was not shown,
    without allocations of kinds a job does not allow (a policy does not see those), shrunk to
    each job's replica limit, and without allocations below a job's minimum (or of no GPUs).
    """

    allocations: dict[str, Allocation]
    errors: tuple[str, ...]


def check_answer(
    answer: Mapping[str, Allocation],
    jobs: Sequence[JobView],
    cluster: ClusterView,
    allowed_kinds: Mapping[str, Sequence[str] | None] | None = None,
) -> Checked:
    """Check `answer` (job id → allocation) against the jobs shown and the cluster shown.

    `allowed_kinds` maps a job id to the GPU kinds it may run on (missing or None: any).
    """
    views = {v.id: v for v in jobs}
    nodes = {n.name: n for n in cluster.nodes}
    allowed_kinds = allowed_kinds or {}
    errors: list[str] = []
    used: dict[str, int] = {}
    kept: dict[str, Allocation] = {}
    for job_id, alloc in answer.items():
        view = views.get(job_id)
        if view is None:
            errors.append(f"allocated GPUs to unknown or inactive job '{job_id}'")
            continue
        for node, count in alloc.gpus.items():
            if node not in nodes:
                errors.append(f"used unknown node '{node}'")
                continue
            if nodes[node].gpu_kind != alloc.kind:
                errors.append(f"mixed GPU kinds in the allocation of '{job_id}'")
            used[node] = used.get(node, 0) + count
        allowed = allowed_kinds.get(job_id)
        if allowed and alloc.kind not in allowed:
            continue
        if alloc.num_replicas > (view.replica_limit or alloc.num_replicas):
            alloc = shrink(alloc, int(view.replica_limit or 1))
        if alloc.num_replicas >= max(view.min_replicas, 1):
            kept[job_id] = alloc
    for node, count in used.items():
        if count > nodes[node].num_gpus:
            errors.append(f"over-allocated node '{node}' ({count} GPUs)")
    return Checked(kept, tuple(errors))

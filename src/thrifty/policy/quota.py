"""Team quotas (GPUs per kind), enforced on any policy's answer.

Quotas are a contract with a team, not an objective to trade off, so they are applied after the
policy rather than folded into each policy: every policy respects them the same way. Within a
team, jobs that keep their current allocation are served first (no needless restarts), then by
priority and age; a job that does not fit is shrunk down to its minimum if it is elastic, else
left waiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from thrifty.policy.base import Allocation
from thrifty.policy.placement import shrink


@dataclass(frozen=True)
class QuotaJob:
    id: str
    team: str
    priority: int
    submit_time: float
    min_replicas: int = 1
    elastic: bool = True
    current: Allocation | None = None


def enforce_quotas(
    allocations: Mapping[str, Allocation],
    jobs: Sequence[QuotaJob],
    quotas: Mapping[str, Mapping[str, int]],
) -> dict[str, Allocation]:
    """`allocations` trimmed so that no team holds more GPUs of a kind than its quota.

    `quotas[team][kind]` is the cap; a team or kind not listed is unlimited.
    """
    if not quotas:
        return dict(allocations)
    out = dict(allocations)
    by_id = {job.id: job for job in jobs}
    used: dict[tuple[str, str], int] = {}
    order = sorted(
        (jid for jid in allocations if jid in by_id),
        key=lambda jid: (
            not allocations[jid].same_as(by_id[jid].current),
            -by_id[jid].priority,
            by_id[jid].submit_time,
            jid,
        ),
    )
    for jid in order:
        job, alloc = by_id[jid], allocations[jid]
        cap = quotas.get(job.team, {}).get(alloc.kind)
        if cap is None:
            continue
        have = used.get((job.team, alloc.kind), 0)
        room = cap - have
        if alloc.num_replicas <= room:
            used[(job.team, alloc.kind)] = have + alloc.num_replicas
        elif job.elastic and room >= max(job.min_replicas, 1):
            out[jid] = shrink(alloc, room)
            used[(job.team, alloc.kind)] = cap
        else:
            del out[jid]
    return out

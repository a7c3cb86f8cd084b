"""Why a job waits, or how it ended, in one line a person reads (`JobRow.reason`).

After each round the scheduler tells every queued job why this round did not start it, from what
each stage of the round granted (`RoundDecision`): a retry back-off, the policy holding it for a
greener start, its team's quota, its owner's budget, or a cluster without room for it (named with
the numbers: "waiting: all 4 cpu slots are in use by 3 jobs"). The texts are built from facts that
change only when the cluster does, so a round that changes nothing writes nothing; a reason that
changes is written on the job and recorded as an event, which gives each job its history.

How a job ended is set where it ends (the scheduler's `_settle`); `shown_reason` reads the row for
the API and the CLI, so both say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from thrifty.cluster.deciding import RoundDecision
from thrifty.cluster.schema import Event, JobRow
from thrifty.cluster.spec import JobSpec
from thrifty.cluster.states import ACTIVE_STATES, CANCELLED, QUEUED, SUCCEEDED
from thrifty.contract import Allocation
from thrifty.policy.base import ClusterView

CPU = "cpu"
SUCCEEDED_REASON = "succeeded: all replicas exited 0"
CANCELLED_REASON = "cancelled on request"
HELD_REASON = ("held for a greener start: the carbon-aware policy starts it in a cleaner hour "
               "that still meets its deadline")


def unit(kind: str) -> str:
    """What one replica of `kind` is called: a CPU slot, or a GPU of that kind."""
    return "cpu slot" if kind == CPU else f"{kind} GPU"


def units(kind: str, count: int) -> str:
    """`count` replicas of `kind`, as a person counts them ("2 cpu slots", "1 a100 GPU")."""
    return f"{count} {unit(kind)}{'' if count == 1 else 's'}"


def running_reason(allocation: Allocation, attempt: int) -> str:
    return f"running: attempt {attempt} on {units(allocation.kind, allocation.num_replicas)}"


def retry_reason(codes: str, delay_s: float, failures: int, limit: int) -> str:
    return (f"retrying after exit code(s) {codes} in {delay_s:.0f} s "
            f"(retry {failures} of {limit})")


def failed_reason(codes: str, failures: int, limit: int) -> str:
    return (f"failed: exit code(s) {codes}, {failures} time(s); no retries left "
            f"(max_restarts={limit})")


def decision_record(job_id: str, decision: RoundDecision) -> dict[str, dict | None]:
    """What the last round granted a job, as stored in `JobRow.last_decision`."""
    proposed, granted = decision.proposed.get(job_id), decision.granted.get(job_id)
    return {"proposed": None if proposed is None else proposed.to_dict(),
            "granted": None if granted is None else granted.to_dict()}


def _in_use(granted: Mapping[str, Allocation], kind: str) -> tuple[int, int]:
    """Replicas of `kind` that granted jobs hold, and how many jobs hold them."""
    held = [a.num_replicas for a in granted.values() if a.kind == kind]
    return sum(held), len(held)


def waiting_reason(job: JobRow, spec: JobSpec, decision: RoundDecision, cluster: ClusterView,
                   quotas: Mapping[str, Mapping[str, int]], teams: Mapping[str, str],
                   now: float) -> str | None:
    """Why the queued `job` did not start this round; None to keep the reason it has (a retry
    back-off, whose reason its failure set)."""
    if (job.retry_at or 0) > now:
        return None
    if job.id in decision.proposed and job.id not in decision.within_quotas:
        kind = decision.proposed[job.id].kind
        cap = quotas.get(job.team, {}).get(kind, 0)
        held = sum(a.num_replicas for jid, a in decision.within_quotas.items()
                   if a.kind == kind and teams.get(jid) == job.team)
        return (f"waiting: quota of team {job.team} allows {units(kind, cap)}; its jobs hold "
                f"{held} and this one needs {decision.proposed[job.id].num_replicas}")
    if job.id in decision.within_quotas and job.id not in decision.granted:
        return (f"waiting: over budget: {job.team}/{job.owner} cannot afford it for the next "
                "interval; it starts when the budget has room")
    if job.id in decision.held:
        return HELD_REASON
    allowed = spec.resources.allowed_kinds()
    kinds = [k for k in (allowed or cluster.kinds) if k in cluster.kinds]
    if not kinds:
        return f"waiting: no node of kind {', '.join(allowed or ())} is up"
    need = spec.requested_replicas()
    parts, room = [], False
    for kind in kinds:
        total = cluster.gpus_of(kind)
        used, holders = _in_use(decision.granted, kind)
        if total - used >= need:
            room = True
            break
        jobs = f"{holders} job{'' if holders == 1 else 's'}"
        if used >= total:
            every = f"all {units(kind, total)} are" if total > 1 else f"the only {unit(kind)} is"
            parts.append(f"{every} in use by {jobs}")
        else:
            parts.append(f"{used} of {units(kind, total)} are in use by {jobs} and it needs "
                         f"{need}")
    if not room:
        return "waiting: " + "; ".join(parts)
    return "waiting: the policy ranked other jobs first this round"


def record(s: Session, job_ids: Iterable[str], decision: RoundDecision, cluster: ClusterView,
           quotas: Mapping[str, Mapping[str, int]], specs: Callable[[JobRow], JobSpec],
           now: float) -> int:
    """Write each active job's last decision, and each queued one's reason, where they changed
    (an event too for a changed reason); returns how many rows changed."""
    rows = list(s.scalars(select(JobRow).where(JobRow.id.in_(list(job_ids)),
                                               JobRow.state.in_(ACTIVE_STATES))))
    teams = {j.id: j.team for j in rows}
    changed = 0
    for job in rows:
        seen = decision_record(job.id, decision)
        touched = False
        if job.last_decision != seen:
            job.last_decision, touched = seen, True
        if job.state == QUEUED:
            why = waiting_reason(job, specs(job), decision, cluster, quotas, teams, now)
            if why is not None and why != job.reason:
                job.reason, touched = why, True
                s.add(Event(job_id=job.id, at=now, kind="waiting", message=why))
        changed += touched
    return changed


def shown_reason(job: JobRow) -> str:
    """The reason the API and CLI show: a finished job's own, else the stored one."""
    if job.state == CANCELLED:
        return CANCELLED_REASON
    if job.state == SUCCEEDED:
        return SUCCEEDED_REASON
    return job.reason or ""



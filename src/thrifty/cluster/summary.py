"""A job's row turned into what people read: its allocation, batch, epoch and goodput.

Shared by the API, the CLI tables and the demo, so all three say the same thing.
"""

from __future__ import annotations

import logging
from typing import Any

from thrifty.cluster.reasons import shown_reason
from thrifty.cluster.schema import JobRow
from thrifty.contract import Allocation, JobReport
from thrifty.errors import ThriftyError

log = logging.getLogger(__name__)


def stored_report(job: JobRow) -> JobReport | None:
    """The job's newest report, parsed; None when it has none or the stored one is malformed
    (logged: one bad report must not take a job listing or a bill down)."""
    if not job.report:
        return None
    try:
        return JobReport.from_dict(job.report)
    except ThriftyError as err:
        log.warning("job %s: ignoring its stored report: %s", job.id, err)
        return None


def current_goodput(report: JobReport | None, alloc: Allocation | None) -> float | None:
    """Samples/s × statistical efficiency the job's own model predicts on its allocation."""
    if report is None or alloc is None or alloc.kind not in report.model.throughput:
        return None
    return float(report.model.best(alloc.kind, alloc.num_nodes, alloc.num_replicas)[0])


def job_summary(job: JobRow, now: float) -> dict[str, Any]:
    """The fields of a job that tables and the API show."""
    report = stored_report(job)
    end = job.finished_at if job.finished_at is not None else now
    alloc = Allocation.from_dict(job.allocation) if job.allocation else None
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "team": job.team,
        "state": job.state,
        "priority": job.priority,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "jct_s": end - job.submitted_at,
        "allocation": job.allocation,
        "replicas": alloc.num_replicas if alloc else 0,
        "restarts": job.restarts,
        "failures": job.failures,
        "replica_seconds": job.replica_seconds,
        "batch_size": None if report is None else report.batch_size,
        "epoch": None if report is None else report.epoch,
        "step": None if report is None else report.step,
        "goodput": current_goodput(report, alloc),
        "message": job.message,
        "reason": shown_reason(job),
        "last_decision": job.last_decision,
    }

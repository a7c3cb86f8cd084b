"""A job's row turned into what people read: its allocation, batch, epoch and goodput.

Shared by the API, the CLI tables and the demo, so all three say the same thing.
"""

from __future__ import annotations

from typing import Any

from thrifty.cluster.schema import JobRow
from thrifty.goodput import GoodputModel
from thrifty.policy.base import Allocation


def current_goodput(
    report: dict[str, Any] | None, allocation: dict[str, Any] | None
) -> float | None:
    """Samples/s × statistical efficiency the job's own model predicts on its allocation."""
    if not report or not allocation or "model" not in report:
        return None
    alloc = Allocation.from_dict(allocation)
    model = GoodputModel.from_dict(report["model"])
    if alloc.kind not in model.throughput:
        return None
    return float(model.best(alloc.kind, alloc.num_nodes, alloc.num_replicas)[0])


def job_summary(job: JobRow, now: float) -> dict[str, Any]:
    """The fields of a job that tables and the API show."""
    report = job.report or {}
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
        "batch_size": report.get("batch_size"),
        "epoch": report.get("epoch"),
        "step": report.get("step"),
        "goodput": current_goodput(report, job.allocation),
        "message": job.message,
    }

"""`/cluster`, `/metrics` and `/healthz`: the nodes, their use, the queue and the scheduler."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from thrifty import __version__
from thrifty.cluster.api.common import STATES, Plane, Who, errors, fail
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.spec import JobSpec
from thrifty.cluster.states import QUEUED
from thrifty.policy.base import NodeView

router = APIRouter(tags=["cluster"])

QUEUE_SHOWN = 50  # the longest-waiting jobs /cluster lists; the counts cover the rest


def executor_nodes(plane: ControlPlane) -> tuple[NodeView, ...]:
    """The executor's nodes, or a 503 that names the executor (a Ray head that went away)."""
    try:
        return plane.executor.nodes()
    except Exception as err:
        raise fail(503, f"the {plane.executor.name} executor cannot list its nodes: "
                        f"{err}") from err


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def metrics_text(jobs_by_state: dict[str, int], gpus: dict[str, int],
                 allocated: dict[str, int], round_s: float | None, policy_s: float | None,
                 rounds: int) -> str:
    """The Prometheus text exposition format (version 0.0.4), written out by hand."""
    out: list[str] = []

    def family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    family("thrifty_jobs", "gauge", "Jobs in the store, by state.",
           ((f'{{state="{s}"}}', jobs_by_state.get(s, 0)) for s in STATES))
    family("thrifty_gpus", "gauge", "GPUs (CPU slots for kind cpu) the executor offers, by kind.",
           ((f'{{kind="{_label(k)}"}}', n) for k, n in sorted(gpus.items())))
    family("thrifty_gpus_allocated", "gauge", "GPUs held by running jobs, by kind.",
           ((f'{{kind="{_label(k)}"}}', allocated.get(k, 0)) for k in sorted(gpus)))
    if round_s is not None:
        family("thrifty_scheduling_round_seconds", "gauge",
               "Wall time of the last scheduling round.", [("", round_s)])
        family("thrifty_scheduling_policy_seconds", "gauge",
               "Time the policy took in the last scheduling round.", [("", policy_s or 0.0)])
    family("thrifty_scheduling_rounds_total", "counter",
           "Scheduling rounds run since the server started.", [("", rounds)])
    return "\n".join(out) + "\n"


def queue(plane: ControlPlane, owner: str | None) -> list[dict[str, Any]]:
    """The queued jobs the caller may see (an admin: everyone's), longest waiting first, with
    what they asked for and since when they wait (submission, or the end of their last run)."""
    store = plane.store
    total = store.count_jobs(owner=owner, states=(QUEUED,))
    rows = store.jobs(owner=owner, states=(QUEUED,), limit=QUEUE_SHOWN,
                      offset=max(total - QUEUE_SHOWN, 0))[::-1]
    ended = store.last_ended([r.id for r in rows])
    out = []
    for row in rows:
        spec = JobSpec.model_validate(row.spec)
        res = spec.resources
        out.append({
            "id": row.id, "name": row.name, "owner": row.owner, "priority": row.priority,
            "mode": spec.mode, "min_replicas": res.min_replicas, "max_replicas": res.max_replicas,
            "gpu_kinds": list(res.allowed_kinds() or ()),
            "submitted_at": row.submitted_at,
            "waiting_since": max(row.submitted_at, ended.get(row.id, 0.0)),
        })
    return sorted(out, key=lambda j: j["waiting_since"])


@router.get("/cluster", summary="Nodes, their use, the queue and the scheduler",
            responses=errors(401, 503))
def cluster(who: Who, plane: Plane) -> dict[str, Any]:
    nodes, used = executor_nodes(plane), plane.store.gpus_in_use()
    last = plane.last_round
    return {
        "executor": plane.executor.name,
        "policy": getattr(plane.policy, "name", type(plane.policy).__name__),
        "interval_s": plane.interval_s,
        "nodes": [{"name": n.name, "gpu_kind": n.gpu_kind, "gpus": n.num_gpus,
                   "used": used.get(n.name, 0), "price_per_hour": n.price_per_hour}
                  for n in nodes],
        "jobs": plane.store.counts_by_state(),
        "queue": queue(plane, None if who.admin else who.name),
        "rounds": plane.rounds,
        "last_round": None if last is None else {
            "started": last.started, "stopped": last.stopped, "finished": last.finished,
            "policy_s": last.policy_s, "total_s": last.total_s,
            "allocated_jobs": len(last.allocations),
        },
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
    200: {"description": "Prometheus's text format, version 0.0.4.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    **errors(401, 503),
})
def metrics(who: Who, plane: Plane) -> Response:
    nodes, used = executor_nodes(plane), plane.store.gpus_in_use()
    gpus: dict[str, int] = {}
    allocated: dict[str, int] = {}
    for n in nodes:
        gpus[n.gpu_kind] = gpus.get(n.gpu_kind, 0) + n.num_gpus
        allocated[n.gpu_kind] = allocated.get(n.gpu_kind, 0) + used.get(n.name, 0)
    last = plane.last_round
    body = metrics_text(plane.store.counts_by_state(), gpus, allocated, last and last.total_s,
                        last and last.policy_s, plane.rounds)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/healthz", summary="Liveness (no token needed)", responses=errors(503))
def healthz(plane: Plane) -> dict[str, Any]:
    try:
        plane.store.ping()
    except Exception as err:
        raise fail(503, f"the job store does not answer: {err}") from err
    return {"status": "ok", "version": __version__, "rounds": plane.rounds}

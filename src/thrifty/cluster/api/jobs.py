"""`/jobs`: submit (JSON or YAML, idempotent with a key), list, show, cancel, and read logs.

Handlers are plain functions run in FastAPI's threadpool: the store is synchronous SQLAlchemy,
and SQLite in WAL mode lets these reads go on while the scheduling loop writes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from thrifty.cluster.api.common import (
    STATES,
    Caller,
    Plane,
    Unprocessable,
    Who,
    errors,
    fail,
    own_job,
    show,
)
from thrifty.cluster.api.logfiles import rank_logs, read_from, read_tail
from thrifty.cluster.api.views import JobDetail, JobLogs, JobPage, JobSummary
from thrifty.cluster.bodies import load_json, load_yaml
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.scheduler import log_tail
from thrifty.cluster.schema import JobRow
from thrifty.cluster.spec import SpecError, validate_spec
from thrifty.cluster.states import FAILED
from thrifty.cluster.store import MAX_INT, spec_hash

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_BYTE_OFFSET = 2**63 - 1  # a log's size as a file offset
JOB_SPEC = {"$ref": "#/components/schemas/JobSpec"}
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
# Printable ASCII without spaces; stored as "user:key", which must fit the 128-character column.
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,64}$")

router = APIRouter(tags=["jobs"])


def parse_body(body: bytes, content_type: str) -> Any:
    """A spec's fields from a request body: JSON, or YAML (`application/yaml`, `text/yaml`),
    refused before parsing when nested too deeply (see `thrifty.cluster.bodies`)."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([("(spec)", "the body is not UTF-8 text")]) from None
    if kind in ("", "application/json") or kind.endswith("+json"):
        return load_json(text)
    if kind in YAML_TYPES:
        return load_yaml(text)
    raise fail(415, f"a spec is sent as application/json or application/yaml, not {kind}")


def parse_states(given: Sequence[str] | None) -> list[str]:
    """`state=running&state=queued` or `state=running,queued`; each must be a known state."""
    states = [s.strip() for item in given or () for s in item.split(",") if s.strip()]
    unknown = [s for s in states if s not in STATES]
    if unknown:
        message = f"unknown state(s) {', '.join(unknown)}; use {', '.join(STATES)}"
        raise Unprocessable(message, [("query.state", message)])
    return states


def _submit(plane: ControlPlane, who: Caller, data: Any,
            key: str | None) -> tuple[int, dict[str, Any]]:
    given = data.get("owner") if isinstance(data, dict) else None
    if given and given != who.name and not who.admin:
        raise fail(403, f"only an admin may submit for another owner ({given!r}); drop the "
                        "owner field")
    spec = validate_spec(data, owner=given or who.name)
    request_key = None if key is None else f"{who.name}:{key}"
    known = plane.store.job_for_request(request_key, spec_hash(spec))  # another spec: a 409
    if known is not None:
        return 200, show(known)
    return 201, show(plane.submit(spec, request_key=request_key))


@router.post("/jobs", summary="Submit a job", status_code=201, responses={
    201: {"description": "The new job, queued.", "model": JobSummary},
    200: {"model": JobSummary, "description": "A retry with an Idempotency-Key already used "
                                              "for this spec: the job stored the first time."},
    **errors(400, 401, 403, 409, 413, 415, 422),
}, openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": JOB_SPEC},
    "application/yaml": {"schema": JOB_SPEC},
}}})
async def submit(
    request: Request, who: Who, plane: Plane,
    idempotency_key: Annotated[str | None, Header(
        description="A client's retry with the same key and spec gets the first job back "
                    "(200, or 201 when it raced the first try) instead of a second copy; the "
                    "same key with another spec is a 409. 1 to 64 printable ASCII characters "
                    "without spaces.")]
    = None,
) -> JSONResponse:
    """A JSON or YAML job spec; the owner is the caller (an admin may name another)."""
    if idempotency_key is not None and not KEY_PATTERN.match(idempotency_key):
        message = ("Idempotency-Key must be 1 to 64 printable ASCII characters without spaces, "
                   "e.g. a UUID")
        raise Unprocessable(message, [("header.idempotency-key", message)])
    body = await request.body()  # at most MAX_SPEC_BYTES: BodyLimits answered 413 otherwise
    data = await run_in_threadpool(parse_body, body, request.headers.get("content-type", ""))
    status, job = await run_in_threadpool(_submit, plane, who, data, idempotency_key)
    return JSONResponse(status_code=status, content=job)


@router.get("/jobs", summary="List jobs",
            responses={200: {"model": JobPage}, **errors(401, 403, 422)})
def list_jobs(
    who: Who, plane: Plane,
    state: Annotated[list[str] | None, Query(
        description=f"Only these states (repeat or comma-separate): {', '.join(STATES)}.")]
    = None,
    owner: Annotated[str | None, Query(description="Admins: only this owner's jobs.")]
    = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> JSONResponse:
    """Your jobs (an admin: everyone's), newest first, a page at a time."""
    states = parse_states(state)
    if owner is not None and owner != who.name and not who.admin:
        raise fail(403, "only an admin may list another user's jobs; drop owner=")
    who_owns = owner if who.admin else who.name
    store = plane.store
    rows = store.jobs(owner=who_owns, states=states or None, limit=limit, offset=offset)
    total = store.count_jobs(owner=who_owns, states=states or None)
    now = time.time()
    # Plain JSON values already: skipping FastAPI's generic encoder halves a page's time.
    return JSONResponse({"jobs": [show(row, now) for row in rows], "total": total,
                         "limit": limit, "offset": offset})


@router.get("/jobs/{job_id}", summary="One job, with its events and attempts",
            response_model=None, responses={200: {"model": JobDetail}, **errors(401, 404, 422)})
def get_job(job_id: str, who: Who, plane: Plane) -> dict[str, Any]:
    row = own_job(plane, who, job_id)
    return {
        **show(row),
        "spec": row.spec,
        "events": [{"at": e.at, "kind": e.kind, "message": e.message}
                   for e in plane.store.events(job_id)],
        "attempts": [{"number": a.number, "allocation": a.allocation,
                      "started_at": a.started_at, "ended_at": a.ended_at,
                      "exit_codes": a.exit_codes, "outcome": a.outcome}
                     for a in plane.store.attempts(job_id)],
        "log_tail": failed_log_tail(plane, row),
    }


def failed_log_tail(plane: ControlPlane, row: JobRow) -> str | None:
    """The last lines each replica of a failed job's newest attempt wrote; None otherwise."""
    number = plane.store.last_attempt(row.id) if row.state == FAILED else 0
    return log_tail(plane.scheduler.log_dir(row.id), number) if number else None


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job",
             response_model=None,
             responses={200: {"model": JobSummary}, **errors(401, 404, 422)})
def cancel(job_id: str, who: Who, plane: Plane) -> dict[str, Any]:
    """A queued job ends at once; a running one is stopped in the next scheduling round."""
    own_job(plane, who, job_id)
    return show(plane.cancel(job_id))


@router.get("/jobs/{job_id}/logs", summary="A job's logs, one text per replica",
            response_model=None, responses={200: {"model": JobLogs}, **errors(401, 404, 422)})
def logs(
    job_id: str, who: Who, plane: Plane,
    tail: Annotated[int | None, Query(ge=0, le=100_000,
                                      description="Only the last N lines per replica.")]
    = None,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT,
                                         description="Default: the newest.")] = None,
    rank: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Only this replica.")]
    = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_BYTE_OFFSET,
                                        description="From this byte on (to follow a log: the "
                                                    "`end` last returned).")]
    = None,
) -> dict[str, Any]:
    row = own_job(plane, who, job_id)
    attempts = plane.store.last_attempt(job_id)
    number = attempt or attempts
    ranks = []
    if number:
        files = rank_logs(plane.scheduler.log_dir(job_id), number)
        for r in sorted(files):
            if rank is not None and r != rank:
                continue
            path = files[r]
            clipped = more = False
            if offset is not None:
                text, start, end, more = read_from(path, offset)
            else:
                text, start, end, clipped = read_tail(path, 10**9 if tail is None else tail)
            ranks.append({"rank": r, "file": path.name, "start": start, "end": end,
                          "clipped": clipped, "more": more, "text": text})
    return {"job_id": job_id, "state": row.state, "attempt": number or None,
            "attempts": attempts, "ranks": ranks}

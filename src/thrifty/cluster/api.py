"""The REST API of the control plane: jobs, their logs, the cluster and its metrics over HTTP.

Everyone but `/healthz` sends a user's API token (`Authorization: Bearer thr_...`). A user sees
and changes only their own jobs (another user's job is a 403, so that a typo in an id, a 404, is
told apart from a missing permission); an admin sees everything and adds users.

Handlers are plain functions run in FastAPI's threadpool: the store is synchronous SQLAlchemy, and
SQLite in WAL mode lets these reads go on while the scheduling loop writes.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import uvicorn
import yaml
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import func, select, text

from thrifty import __version__
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import Attempt, JobRow, User
from thrifty.cluster.spec import NAME_PATTERN, SpecError, validate_spec
from thrifty.cluster.store import ACTIVE_STATES, RESTARTING, RUNNING, TERMINAL_STATES
from thrifty.cluster.summary import job_summary
from thrifty.cluster.usage import live_ledger
from thrifty.errors import ThriftyError

STATES = (*ACTIVE_STATES, *TERMINAL_STATES)
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; anything this big is a mistake
MAX_LOG_BYTES = 1 << 20  # per rank and response: a client pages on with `offset`
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
# Printable ASCII without spaces; stored as "user:key", which must fit the 128-character column.
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,64}$")

TOKEN_HELP = ("send `Authorization: Bearer <token>`; `thrifty server` writes the admin's token "
              "to THRIFTY_HOME/token, and `thrifty users add NAME` makes one per user")


@dataclass(frozen=True)
class Caller:
    """The user a request's token belongs to."""

    name: str
    admin: bool


class NewUser(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Login name, also the owner of jobs.")
    admin: bool = Field(False, description="Admins see every job and add users.")
    rotate: bool = Field(False, description="Issue a new token to an existing user (the old "
                                            "one stops working).")


def _fail(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers or None)


def _problems(err: SpecError) -> JSONResponse:
    return JSONResponse(status_code=422, content={
        "detail": f"invalid job spec: {len(err.problems)} problem(s); fix every field listed in "
                  "`problems` and submit again",
        "problems": [{"field": field, "message": message} for field, message in err.problems],
    })


def parse_body(body: bytes, content_type: str) -> Any:
    """A spec's fields from a request body: JSON, or YAML (`application/yaml`, `text/yaml`)."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        text_ = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([("(spec)", "the body is not UTF-8 text")]) from None
    if kind in ("", "application/json") or kind.endswith("+json"):
        try:
            return json.loads(text_)
        except ValueError as err:
            raise SpecError([("(spec)", f"not valid JSON: {err}")]) from None
    if kind in YAML_TYPES:
        try:
            return yaml.safe_load(text_)
        except yaml.YAMLError as err:
            raise SpecError([("(spec)", f"not valid YAML: {err}")]) from None
    raise _fail(415, f"a spec is sent as application/json or application/yaml, not {kind}")


def parse_states(given: Sequence[str] | None) -> list[str]:
    """`state=running&state=queued` or `state=running,queued`; each must be a known state."""
    states = [s.strip() for item in given or () for s in item.split(",") if s.strip()]
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise _fail(422, f"unknown state(s) {', '.join(unknown)}; use {', '.join(STATES)}")
    return states


def read_tail(path: Path, lines: int, cap: int = MAX_LOG_BYTES) -> tuple[str, int, int, bool]:
    """The last `lines` lines of a file, read backwards in blocks (a log may be gigabytes), at
    most `cap` bytes. Returns (text, its start and end byte offsets, clipped by `cap`)."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        start, chunk = end, b""
        while start > 0 and chunk.count(b"\n") <= lines and end - start < cap:
            step = min(64 << 10, start)
            start -= step
            f.seek(start)
            chunk = f.read(step) + chunk
    parts = chunk.splitlines(keepends=True)
    if start > 0 and parts:
        parts = parts[1:]  # most likely the end of a line that began before the block
    keep = parts[-lines:] if lines else []
    clipped = start > 0 and len(keep) < lines
    data = b"".join(keep)
    if len(data) > cap:
        data, clipped = data[-cap:], True
    return data.decode("utf-8", errors="replace"), end - len(data), end, clipped


def read_from(path: Path, offset: int, cap: int = MAX_LOG_BYTES) -> tuple[str, int, int, bool]:
    """A file from byte `offset` on, at most `cap` bytes, ending at a line end when it can.
    Returns (text, its start and end byte offsets, more bytes left after it)."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        offset = min(offset, size)
        f.seek(offset)
        data = f.read(cap)
    more = offset + len(data) < size
    if more and b"\n" in data:  # leave a split line (and a split UTF-8 character) for next time
        data = data[: data.rindex(b"\n") + 1]
    return data.decode("utf-8", errors="replace"), offset, offset + len(data), more


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


_bearer = HTTPBearer(auto_error=False, description="An API token (`thrifty users add`).")


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The user behind the request's token, or a 401 that says where tokens come from."""
    if credentials is None:
        raise _fail(401, f"missing API token: {TOKEN_HELP}", **{"WWW-Authenticate": "Bearer"})
    user = request.app.state.plane.store.user_for_token(credentials.credentials)
    if user is None:
        raise _fail(401, f"invalid API token: {TOKEN_HELP}", **{"WWW-Authenticate": "Bearer"})
    return Caller(user.name, bool(user.admin))


Who = Annotated[Caller, Depends(current_caller)]


def create_app(plane: ControlPlane) -> FastAPI:
    """The API over one control plane (whose loop the caller starts and stops)."""
    store, scheduler = plane.store, plane.scheduler
    app = FastAPI(
        title="thrifty",
        version=__version__,
        description="Submit, watch and cancel training jobs; see the cluster the scheduler shares "
                    "among them. Authenticate with a token: `Authorization: Bearer <token>`.",
    )
    app.state.plane = plane

    @app.exception_handler(SpecError)
    def _spec_error(_request: Request, err: SpecError) -> JSONResponse:
        return _problems(err)

    @app.exception_handler(ThriftyError)
    def _thrifty_error(_request: Request, err: ThriftyError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(err)})

    def own_job(who: Caller, job_id: str) -> JobRow:
        row = store.get(job_id)
        if row is None:
            raise _fail(404, f"no job {job_id}; `thrifty jobs --all-states` lists yours")
        if not who.admin and row.owner != who.name:
            raise _fail(403, f"job {job_id} belongs to another user; you can only see and "
                             "change your own jobs")
        return row

    def show(row: JobRow, now: float | None = None) -> dict[str, Any]:
        return {**job_summary(row, time.time() if now is None else now),
                "cancel_requested": bool(row.cancel_requested)}

    # ---- jobs ----------------------------------------------------------------------------------

    def _submit(who: Caller, data: Any, key: str | None) -> tuple[int, dict[str, Any]]:
        given = data.get("owner") if isinstance(data, dict) else None
        if given and given != who.name and not who.admin:
            raise _fail(403, f"only an admin may submit for another owner ({given!r}); drop the "
                             "owner field")
        spec = validate_spec(data, owner=given or who.name)
        request_key = None if key is None else f"{who.name}:{key}"
        if request_key is not None:
            with store.session() as s:
                known = s.scalar(select(JobRow).where(JobRow.request_key == request_key))
            if known is not None:
                return 200, show(known)
        return 201, show(plane.submit(spec, request_key=request_key))

    @app.post("/jobs", summary="Submit a job", status_code=201, openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        }},
        "responses": {"422": {"description": "The spec's wrong fields, each with its path."}},
    })
    async def submit(
        request: Request, who: Who,
        idempotency_key: Annotated[str | None, Header(
            description="A client's retry with the same key gets the first job back (200, "
                        "or 201 when it raced the first try) instead of a second copy.")]
        = None,
    ) -> JSONResponse:
        """A JSON or YAML job spec; the owner is the caller (an admin may name another)."""
        if idempotency_key is not None and not KEY_PATTERN.match(idempotency_key):
            raise _fail(422, "Idempotency-Key must be 1 to 64 printable ASCII characters "
                             "without spaces, e.g. a UUID")
        body = await request.body()
        if len(body) > MAX_SPEC_BYTES:
            raise _fail(413, f"a spec of {len(body)} bytes is over the {MAX_SPEC_BYTES} limit")
        data = parse_body(body, request.headers.get("content-type", ""))
        status, job = await run_in_threadpool(_submit, who, data, idempotency_key)
        return JSONResponse(status_code=status, content=job)

    @app.get("/jobs", summary="List jobs")
    def list_jobs(
        who: Who,
        state: Annotated[list[str] | None, Query(
            description=f"Only these states (repeat or comma-separate): {', '.join(STATES)}.")]
        = None,
        owner: Annotated[str | None, Query(description="Admins: only this owner's jobs.")]
        = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JSONResponse:
        """Your jobs (an admin: everyone's), newest first, a page at a time."""
        states = parse_states(state)
        if owner is not None and owner != who.name and not who.admin:
            raise _fail(403, "only an admin may list another user's jobs; drop owner=")
        who_owns = owner if who.admin else who.name
        rows = store.jobs(owner=who_owns, states=states or None, limit=limit, offset=offset)
        count = select(func.count()).select_from(JobRow)
        if who_owns is not None:
            count = count.where(JobRow.owner == who_owns)
        if states:
            count = count.where(JobRow.state.in_(states))
        with store.session() as s:
            total = int(s.scalar(count) or 0)
        now = time.time()
        # Plain JSON values already: skipping FastAPI's generic encoder halves a page's time.
        return JSONResponse({"jobs": [show(row, now) for row in rows], "total": total,
                             "limit": limit, "offset": offset})

    @app.get("/jobs/{job_id}", summary="One job, with its events and attempts")
    def get_job(job_id: str, who: Who) -> dict[str, Any]:
        row = own_job(who, job_id)
        with store.session() as s:
            attempts = list(s.scalars(select(Attempt).where(Attempt.job_id == job_id)
                                      .order_by(Attempt.number)))
        return {
            **show(row),
            "spec": row.spec,
            "events": [{"at": e.at, "kind": e.kind, "message": e.message}
                       for e in store.events(job_id)],
            "attempts": [{"number": a.number, "allocation": a.allocation,
                          "started_at": a.started_at, "ended_at": a.ended_at,
                          "exit_codes": a.exit_codes, "outcome": a.outcome} for a in attempts],
        }

    @app.post("/jobs/{job_id}/cancel", summary="Cancel a job")
    def cancel(job_id: str, who: Who) -> dict[str, Any]:
        """A queued job ends at once; a running one is stopped in the next scheduling round."""
        own_job(who, job_id)
        return show(plane.cancel(job_id))

    @app.get("/jobs/{job_id}/logs", summary="A job's logs, one text per replica")
    def logs(
        job_id: str, who: Who,
        tail: Annotated[int | None, Query(ge=0, le=100_000,
                                          description="Only the last N lines per replica.")]
        = None,
        attempt: Annotated[int | None, Query(ge=1, description="Default: the newest.")] = None,
        rank: Annotated[int | None, Query(ge=0, description="Only this replica.")] = None,
        offset: Annotated[int | None, Query(ge=0, description="From this byte on (to follow a "
                                                              "log: the `end` last returned).")]
        = None,
    ) -> dict[str, Any]:
        row = own_job(who, job_id)
        with store.session() as s:
            attempts = s.scalar(select(func.max(Attempt.number))
                                .where(Attempt.job_id == job_id)) or 0
        number = attempt or attempts
        ranks = []
        folder = scheduler.log_dir(job_id)
        if number:
            files = {}
            for path in folder.glob(f"attempt-{number}-rank-*.log"):
                r = path.stem.rsplit("-", 1)[1]
                if r.isdigit():
                    files[int(r)] = path
            for r in sorted(files):
                if rank is not None and r != rank:
                    continue
                path = files[r]
                clipped = more = False
                if offset is not None:
                    text_, start, end, more = read_from(path, offset)
                else:
                    text_, start, end, clipped = read_tail(path, 10**9 if tail is None else tail)
                ranks.append({"rank": r, "file": path.name, "start": start, "end": end,
                              "clipped": clipped, "more": more, "text": text_})
        return {"job_id": job_id, "state": row.state, "attempt": number or None,
                "attempts": attempts, "ranks": ranks}

    # ---- cluster -------------------------------------------------------------------------------

    def _counts() -> dict[str, int]:
        with store.session() as s:
            pairs = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        return {**dict.fromkeys(STATES, 0), **{str(k): int(v) for k, v in pairs}}

    def _usage() -> tuple[Any, dict[str, int]]:
        try:
            nodes = plane.executor.nodes()
        except Exception as err:  # a Ray head that went away: say so instead of a bare 500
            raise _fail(503, f"the {plane.executor.name} executor cannot list its nodes: "
                             f"{err}") from err
        used: dict[str, int] = {}
        for row in store.jobs(states=[RUNNING, RESTARTING]):
            for node, count in ((row.allocation or {}).get("gpus") or {}).items():
                used[node] = used.get(node, 0) + int(count)
        return nodes, used

    @app.get("/cluster", summary="Nodes, their use, the queue and the scheduler")
    def cluster(who: Who) -> dict[str, Any]:
        nodes, used = _usage()
        last = plane.last_round
        return {
            "executor": plane.executor.name,
            "policy": getattr(plane.policy, "name", type(plane.policy).__name__),
            "interval_s": plane.interval_s,
            "nodes": [{"name": n.name, "gpu_kind": n.gpu_kind, "gpus": n.num_gpus,
                       "used": used.get(n.name, 0), "price_per_hour": n.price_per_hour}
                      for n in nodes],
            "jobs": _counts(),
            "rounds": plane.rounds,
            "last_round": None if last is None else {
                "started": last.started, "stopped": last.stopped, "finished": last.finished,
                "policy_s": last.policy_s, "total_s": last.total_s,
                "allocated_jobs": len(last.allocations),
            },
        }

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics(who: Who) -> Response:
        nodes, used = _usage()
        gpus: dict[str, int] = {}
        allocated: dict[str, int] = {}
        for n in nodes:
            gpus[n.gpu_kind] = gpus.get(n.gpu_kind, 0) + n.num_gpus
            allocated[n.gpu_kind] = allocated.get(n.gpu_kind, 0) + used.get(n.name, 0)
        last = plane.last_round
        body = metrics_text(_counts(), gpus, allocated, last and last.total_s,
                            last and last.policy_s, plane.rounds)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/usage", summary="GPU-hours, USD, kWh and kg CO2e of every job, as a ledger")
    def usage(who: Who) -> dict[str, Any]:
        """An admin's covers everyone's jobs, anyone else's their own; `thrifty report` groups
        it by job, user or team."""
        nodes, _ = _usage()
        book = live_ledger(store, plane.tariff, time.time(), nodes,
                           owner=None if who.admin else who.name)
        return book.to_dict()

    @app.get("/healthz", summary="Liveness (no token needed)")
    def healthz() -> dict[str, Any]:
        try:
            with store.session() as s:
                s.execute(text("SELECT 1"))
        except Exception as err:
            raise _fail(503, f"the job store does not answer: {err}") from err
        return {"status": "ok", "version": __version__, "rounds": plane.rounds}

    # ---- users ---------------------------------------------------------------------------------

    @app.post("/users", summary="Add a user (admins)", status_code=201)
    def add_user(new: NewUser, who: Who) -> dict[str, Any]:
        """Returns the user's API token: it is stored only hashed, so this is the one chance."""
        if not who.admin:
            raise _fail(403, "only an admin may add users")
        with store.session() as s:
            exists = s.get(User, new.name) is not None
        if exists and not new.rotate:
            raise _fail(409, f"user {new.name} exists; rotate its token (`thrifty users add "
                             f"{new.name} --rotate`) to issue a new one")
        token = store.add_user(new.name, admin=new.admin)
        return {"name": new.name, "admin": new.admin, "token": token}

    return app


class ApiServer:
    """The API served by uvicorn on a thread of this process, on a port it binds first (0: any
    free one), so the URL is known and taken before anything connects."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.socket = bind(host, port)
        self.host, self.port = host, int(self.socket.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False,
                                                    timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        self._thread = threading.Thread(target=self.server.run, args=([self.socket],),
                                        name="thrifty-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ThriftyError(f"the API server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or an error that says which address is taken and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on every accepted connection, so a
    # response written in two parts does not wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ThriftyError(f"cannot listen on {host}:{port}: {err.strerror}; pick another "
                           "address with --host/--port") from err
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock

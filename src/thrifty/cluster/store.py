"""The durable job store: every state change is committed here before anyone acts on it.

SQLite in `~/.thrifty/thrifty.db` by default (WAL mode, so the API reads while the scheduler
writes), PostgreSQL or anything SQLAlchemy speaks when `Settings.db_url` says so. The schema is
created and upgraded by Alembic migrations when the store opens, so an old database keeps working
after an upgrade of thrifty.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from thrifty.cluster.schema import AllocationRow, Attempt, Event, JobRow, ReportRow, User
from thrifty.cluster.spec import JobSpec, spec_json
from thrifty.cluster.states import (
    ACTIVE_STATES,
    CANCELLED,
    QUEUED,
    RESTARTING,
    RUNNING,
    TERMINAL_STATES,
)
from thrifty.contract import Env
from thrifty.errors import ThriftyError

REPORT_HISTORY_S = 60.0  # keep a reported model at least this often, and at every batch change
MAX_INT = 2**31 - 1  # the largest count, offset or number every database's INTEGER holds


class KeyReused(ThriftyError):
    """An idempotency key sent again with a different spec: the first job stands, the new spec
    is not stored."""

    def __init__(self, request_key: str, job: JobRow) -> None:
        self.job = job
        key = request_key.split(":", 1)[-1]
        super().__init__(f"Idempotency-Key {key!r} was already used for a different request "
                         f"(job {job.id}); send a new key for a new job, or the first spec "
                         "again to get that job back")


def _to_json(value: Any) -> str:
    """JSON columns take typed values too (an executor's handle): stored as their to_dict()."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    return json.dumps(value, default=default)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest migration (creates it in an empty database)."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def keep_report(s: Session, job: JobRow, report: dict[str, Any], now: float) -> None:
    """Make `report` the job's newest, and add it to the history when the batch size changed or
    the last kept one is older than REPORT_HISTORY_S (reports arrive every few seconds)."""
    if report == job.report:
        return
    previous = job.report or {}
    changed = previous.get("batch_size") != report.get("batch_size")
    last_kept = s.scalar(select(func.max(ReportRow.at)).where(ReportRow.job_id == job.id))
    if changed or last_kept is None or now - last_kept >= REPORT_HISTORY_S:
        s.add(ReportRow(job_id=job.id, at=now, report=report))
    job.report, job.reported_at = report, now


def spec_hash(spec: JobSpec) -> str:
    """The hash of a spec's canonical JSON: two bodies that describe the same job agree."""
    return hashlib.sha256(spec_json(spec).encode()).hexdigest()


def token_id(user: User) -> str | None:
    """A short name for a user's current token that gives nothing of it away (the start of
    its hash); None once revoked."""
    return None if user.revoked_at is not None else user.token_hash[:12]


def new_job_id(name: str) -> str:
    return f"{name[:24].lower()}-{uuid.uuid4().hex[:10]}"


def _private_file(database: str | None) -> None:
    """Create a new SQLite file readable by its owner only (its journal and WAL files take the
    same mode): it holds every user's token hash and job."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Store:
    """Sessions on one database, plus the few queries several parts share."""

    def __init__(self, url: str) -> None:
        """`url`: a SQLAlchemy URL, as `Settings.database_url()` gives it."""
        self.url = url
        sqlite = self.url.startswith("sqlite")
        try:
            self.engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
                pool_size=10 if sqlite else 5,
                max_overflow=20,
                json_serializer=_to_json,
            )
            if sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
                _private_file(self.engine.url.database)
            migrate(self.engine)
        except Exception as err:
            raise ThriftyError(
                f"cannot open the job store at {self.url}: {err}; check {Env.DB_URL} (or "
                "--db)"
            ) from err
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends normally, rolled back otherwise."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # ---- users ---------------------------------------------------------------------------------

    def add_user(self, name: str, admin: bool = False) -> str:
        """Create (or re-key) a user; returns their new API token, which is stored only hashed."""
        token = f"thr_{secrets.token_urlsafe(24)}"
        with self.session() as s:
            user = s.get(User, name)
            if user is None:
                s.add(User(name=name, token_hash=hash_token(token), admin=admin,
                           created_at=time.time()))
            else:
                user.token_hash, user.admin, user.revoked_at = hash_token(token), admin, None
        return token

    def users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def revoke_user(self, name: str, now: float | None = None) -> User | None:
        """Make a user's token stop working at once (their jobs stay); a new one comes from
        `add_user`. None when there is no such user."""
        with self.session() as s:
            user = s.get(User, name)
            if user is None:
                return None
            if user.revoked_at is None:
                # No token hashes to this (hashes are 64 hex digits), and it stays unique.
                user.token_hash = f"revoked-{secrets.token_hex(16)}"
                user.revoked_at = time.time() if now is None else now
            return user

    def has_user(self, name: str) -> bool:
        with self.session() as s:
            return s.get(User, name) is not None

    def user_for_token(self, token: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.token_hash == hash_token(token),
                                               User.revoked_at.is_(None)))

    def count_users(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(User)) or 0)

    # ---- jobs ----------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, now: float | None = None,
               request_key: str | None = None) -> JobRow:
        """Store a new queued job. A repeated `request_key` (a client's retry of the same
        submission) returns the job stored the first time instead of a second copy; with a
        different spec it raises KeyReused and stores nothing."""
        now = time.time() if now is None else now
        digest = spec_hash(spec)
        known = self.job_for_request(request_key, digest)
        if known is not None:
            return known
        row = JobRow(
            id=new_job_id(spec.name), name=spec.name, owner=spec.owner, team=spec.team,
            spec=spec.model_dump(mode="json"), state=QUEUED, priority=spec.priority,
            submitted_at=now, restarts=0, failures=0, attained_service=0.0,
            replica_seconds=0.0, cancel_requested=False, message="", request_key=request_key,
            request_hash=None if request_key is None else digest,
        )
        try:
            with self.session() as s:
                s.add(row)
                s.add(Event(job_id=row.id, at=now, kind="submitted",
                            message=f"submitted by {spec.owner or 'anonymous'}"))
        except IntegrityError:
            if request_key is None:
                raise
            known = self.job_for_request(request_key, digest)  # the same request racing
            if known is None:  # itself: the first one won
                raise
            return known
        return row

    def job_for_request(self, request_key: str | None,
                        digest: str | None = None) -> JobRow | None:
        """The job a submission with this idempotency key stored, if any. Given the spec's
        `digest` (`spec_hash`), a job stored from another spec raises KeyReused (a job stored
        before hashes were kept matches any)."""
        if request_key is None:
            return None
        with self.session() as s:
            known = s.scalar(select(JobRow).where(JobRow.request_key == request_key))
        if (known is not None and digest is not None and known.request_hash is not None
                and known.request_hash != digest):
            raise KeyReused(request_key, known)
        return known

    def get(self, job_id: str) -> JobRow | None:
        with self.session() as s:
            return s.get(JobRow, job_id)

    def count_jobs(self, owner: str | None = None, states: Sequence[str] | None = None) -> int:
        """How many jobs `jobs()` would list without a page limit."""
        query = select(func.count()).select_from(JobRow)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if states:
            query = query.where(JobRow.state.in_(list(states)))
        with self.session() as s:
            return int(s.scalar(query) or 0)

    def counts_by_state(self) -> dict[str, int]:
        """Jobs per state, every state named (0 for an empty one)."""
        with self.session() as s:
            pairs = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        return {**dict.fromkeys((*ACTIVE_STATES, *TERMINAL_STATES), 0),
                **{str(k): int(v) for k, v in pairs}}

    def gpus_in_use(self) -> dict[str, int]:
        """GPUs (CPU slots) that running and restarting jobs hold, by node."""
        used: dict[str, int] = {}
        for row in self.jobs(states=[RUNNING, RESTARTING]):
            for node, count in ((row.allocation or {}).get("gpus") or {}).items():
                used[node] = used.get(node, 0) + int(count)
        return used

    def attempts(self, job_id: str) -> list[Attempt]:
        with self.session() as s:
            return list(s.scalars(select(Attempt).where(Attempt.job_id == job_id)
                                  .order_by(Attempt.number)))

    def last_attempt(self, job_id: str) -> int:
        """The number of the job's newest attempt; 0 before its first."""
        with self.session() as s:
            return s.scalar(select(func.max(Attempt.number))
                            .where(Attempt.job_id == job_id)) or 0

    def last_ended(self, job_ids: Sequence[str]) -> dict[str, float]:
        """When each job's newest finished attempt ended (jobs that never ran are absent)."""
        with self.session() as s:
            rows = s.execute(select(Attempt.job_id, func.max(Attempt.ended_at))
                             .where(Attempt.job_id.in_(list(job_ids)))
                             .group_by(Attempt.job_id)).all()
        return {job_id: ended for job_id, ended in rows if ended is not None}

    def usage_history(self, owner: str | None = None, since: float | None = None
                      ) -> list[tuple[JobRow, list[AllocationRow]]]:
        """Jobs in submission order, each with the allocations it held (oldest first): what a
        ledger is priced from. `owner`: only theirs; `since`: only jobs that held GPUs after it."""
        query = select(JobRow).order_by(JobRow.submitted_at)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if since is not None:
            recent = select(AllocationRow.job_id).where(
                (AllocationRow.end.is_(None)) | (AllocationRow.end >= since))
            query = query.where(JobRow.id.in_(recent))
        with self.session() as s:
            jobs = list(s.scalars(query))
            history: dict[str, list[AllocationRow]] = {}
            for row in s.scalars(select(AllocationRow)
                                 .where(AllocationRow.job_id.in_([j.id for j in jobs]))
                                 .order_by(AllocationRow.start)):
                history.setdefault(row.job_id, []).append(row)
        return [(job, history.get(job.id, [])) for job in jobs]

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.session() as s:
            s.execute(text("SELECT 1"))

    def jobs(
        self,
        owner: str | None = None,
        states: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[JobRow]:
        """Newest first; `limit` and `offset` (at most MAX_INT, what SQL's LIMIT holds) page."""
        if not 0 <= offset <= MAX_INT or (limit is not None and not 0 <= limit <= MAX_INT):
            raise ThriftyError(f"a page's limit and offset must be 0 to {MAX_INT}, got "
                               f"limit={limit}, offset={offset}")
        query = select(JobRow).order_by(JobRow.submitted_at.desc(), JobRow.id)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if states:
            query = query.where(JobRow.state.in_(list(states)))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        with self.session() as s:
            return list(s.scalars(query))

    def request_cancel(self, job_id: str, now: float | None = None) -> JobRow:
        """Mark a job for cancelling: a queued job ends at once, a running one next round."""
        now = time.time() if now is None else now
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise ThriftyError(f"no job {job_id}")
            if row.state in TERMINAL_STATES:
                return row
            row.cancel_requested = True
            if row.state == QUEUED:
                row.state, row.finished_at = CANCELLED, now
            s.add(Event(job_id=job_id, at=now, kind="cancel", message="cancel requested"))
            return row

    def events(self, job_id: str | None = None, limit: int = 100) -> list[Event]:
        query = select(Event).order_by(Event.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(Event.job_id == job_id)
        with self.session() as s:
            return list(reversed(list(s.scalars(query))))

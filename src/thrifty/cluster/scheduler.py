"""The scheduling loop: read the jobs' reports, run the policy, apply the difference.

A round (1) collects finished attempts and cancels, (2) takes the newest GoodputModel each running
job reported, (3) places rigid jobs on what is free (they get exactly what they ask for and are
never moved) and lets the policy share the rest among adaptive jobs, within team quotas,
(4) applies what changed: a resize is a checkpoint-restart (SIGTERM, checkpoint at the next step
boundary, relaunch on the new allocation), a job left without GPUs goes back to the queue, and
(5) tells each job that did not start why (`thrifty.cluster.reasons`), writing only what changed.
Every decision is committed to the store before the executor is told, so a control plane that
dies mid-round finds on restart what it was doing (`recover`).

The steps are methods of their own (`collect`, `decide`, `apply`, `recover`) and time comes from
an injected clock, so that each can be driven and checked alone against a store and an executor.
Deciding itself lives in `thrifty.cluster.deciding`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from thrifty.cluster import reasons
from thrifty.cluster.budgets import LiveBudgets
from thrifty.cluster.deciding import JobFacts, RoundDecision, decide, eligible
from thrifty.cluster.executor import LOST, AttemptStatus, Executor, Launch
from thrifty.cluster.schema import AllocationRow, Attempt, Event, JobRow
from thrifty.cluster.states import (
    ACTIVE_STATES,
    CANCELLED,
    FAILED,
    QUEUED,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
)
from thrifty.cluster.store import Store, keep_report
from thrifty.policy.base import Allocation, ClusterView, Policy

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20


def log_tail(log_dir: Path, attempt: int, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of each replica's log of one attempt, for a failed job's message."""
    parts = []
    for path in sorted(log_dir.glob(f"attempt-{attempt}-rank-*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name} ---\n" + "\n".join(text))
    return "\n".join(parts)


@dataclass
class RoundStats:
    """What one round did, and how long its parts took (seconds)."""

    started: int = 0
    stopped: int = 0
    finished: int = 0
    policy_s: float = 0.0
    total_s: float = 0.0
    allocations: dict[str, Allocation] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerConfig:
    """How the scheduler acts, in seconds.

    `restart_s` is what a resize is estimated to cost a job (the policy weighs it);
    `retry_backoff_s` the wait before a failed job's first retry (doubling with each failure);
    `grace_s` how long stopped replicas get to checkpoint before they are killed. `quotas` maps a
    team to the GPUs per kind it may hold at once.
    """

    restart_s: float = 30.0
    retry_backoff_s: float = 5.0
    grace_s: float = 60.0
    quotas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("restart_s", "retry_backoff_s", "grace_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


class Scheduler:
    """Owns the decisions; the store owns the state; the executor owns the processes."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        policy: Policy,
        *,
        home: Path,
        config: SchedulerConfig | None = None,
        clock: Callable[[], float] = time.time,
        budgets: LiveBudgets | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.policy = policy
        self.home = home
        self.config = config or SchedulerConfig()
        self.clock = clock  # seconds, on the clock job submissions and deadlines use
        self.budgets = budgets
        self.facts = JobFacts()
        self.decision = RoundDecision()  # what the last round's stages granted
        self._last_round: float | None = None

    # ---- paths ---------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.home / "jobs" / job_id

    def log_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "logs"

    def checkpoint_dir(self, job: JobRow) -> Path:
        given = self.facts.spec(job).checkpoint_dir
        return Path(given) if given else self.job_dir(job.id) / "checkpoints"

    # ---- recovery ------------------------------------------------------------------------------

    def recover(self) -> None:
        """After a (re)start: adopt attempts that still run, requeue jobs whose attempt is gone."""
        now = self.clock()
        with self.store.session() as s:
            jobs = list(s.scalars(select(JobRow).where(JobRow.state.in_([RUNNING, RESTARTING]))))
            for job in jobs:
                attempt = self._open_attempt(s, job.id)
                if attempt is not None and attempt.handle and self.executor.adopt(attempt.handle):
                    job.state = RUNNING
                    s.add(Event(job_id=job.id, at=now, kind="adopted",
                                message=f"attempt {attempt.number} re-adopted after restart"))
                    continue
                if attempt is not None and attempt.handle:
                    status = self.executor.poll(attempt.handle)
                    if not status.running and LOST not in status.exit_codes:
                        self._settle(s, job, attempt, status, now)  # it ended while we were down
                        continue
                if attempt is not None:
                    self._close_attempt(s, attempt, now, "lost", None)
                self._requeue(s, job, now, "its replicas were gone after a control-plane restart; "
                                           "resuming from the last checkpoint")

    # ---- one round -----------------------------------------------------------------------------

    def round(self) -> RoundStats:
        """One round: collect what happened, decide, apply what changed."""
        t0 = time.perf_counter()
        stats = RoundStats()
        now = self.clock()
        elapsed = 0.0 if self._last_round is None else max(now - self._last_round, 0.0)
        self._last_round = now
        stats.finished = self.collect(now, elapsed)
        with self.store.session() as s:
            jobs = list(s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE_STATES))))
        self.facts.keep_only(j.id for j in jobs)
        cluster = ClusterView(self.executor.nodes())
        t1 = time.perf_counter()
        wanted = self.decide(jobs, cluster, now)
        stats.policy_s = time.perf_counter() - t1
        stats.allocations = wanted
        stats.stopped, stats.started = self.apply(jobs, wanted, now)
        with self.store.session() as s:
            reasons.record(s, (j.id for j in jobs), self.decision, cluster,
                           self.config.quotas, self.facts.spec, now)
        stats.total_s = time.perf_counter() - t0
        return stats

    def attempts_ended(self) -> bool:
        """Whether some running attempt has ended: cheap, so the loop can look every second and
        hand freed GPUs to waiting jobs without waiting for the next interval."""
        with self.store.session() as s:
            handles = list(s.scalars(
                select(Attempt.handle).join(JobRow, JobRow.id == Attempt.job_id)
                .where(Attempt.ended_at.is_(None), JobRow.state == RUNNING)
            ))
        return any(h and not self.executor.poll(h).running for h in handles)

    def open_handles(self) -> list[dict[str, Any]]:
        """Executor handles of every attempt that has not ended."""
        with self.store.session() as s:
            return [a.handle for a in self._open_attempts(s).values() if a.handle]

    def _open_attempts(self, s: Session) -> dict[str, Attempt]:
        """Every job's attempt that has not ended (the newest, should there be several)."""
        rows = s.scalars(select(Attempt).where(Attempt.ended_at.is_(None))
                         .order_by(Attempt.number))
        return {a.job_id: a for a in rows}

    def _open_attempt(self, s: Session, job_id: str) -> Attempt | None:
        return s.scalar(
            select(Attempt).where(Attempt.job_id == job_id, Attempt.ended_at.is_(None))
            .order_by(Attempt.number.desc())
        )

    def _close_attempt(self, s: Session, attempt: Attempt, now: float, outcome: str,
                       codes: list[int | None] | None) -> None:
        attempt.ended_at, attempt.outcome, attempt.exit_codes = now, outcome, codes
        row = s.scalar(select(AllocationRow).where(
            AllocationRow.job_id == attempt.job_id, AllocationRow.end.is_(None)))
        if row is not None:
            row.end = now

    def _requeue(self, s: Session, job: JobRow, now: float, why: str) -> None:
        job.state, job.allocation, job.reason = QUEUED, None, f"queued: {why}"
        s.add(Event(job_id=job.id, at=now, kind="requeued", message=why))

    def collect(self, now: float, elapsed: float) -> int:
        """Account `elapsed` seconds of service, take reports, settle finished attempts and
        cancels; returns how many attempts finished on their own."""
        finished = 0
        with self.store.session() as s:
            running = list(s.scalars(select(JobRow).where(JobRow.state == RUNNING)))
            opened = self._open_attempts(s)
            to_cancel = []
            for job in running:
                attempt = opened.get(job.id)
                if attempt is None:
                    self._requeue(s, job, now, "no attempt on record")
                    continue
                replicas = Allocation.from_dict(attempt.allocation).num_replicas
                job.replica_seconds += replicas * elapsed
                job.attained_service += replicas * elapsed
                status = self.executor.poll(attempt.handle)
                report = status.extra.get("report")
                if report:
                    keep_report(s, job, report, now)
                if job.cancel_requested:
                    to_cancel.append((job, attempt))
                    continue
                if status.running:
                    continue
                finished += 1
                self._settle(s, job, attempt, status, now)
        if to_cancel:
            self.executor.stop([a.handle for _, a in to_cancel], self.config.grace_s)
            with self.store.session() as s:
                for seen, opened in to_cancel:
                    job, attempt = s.get(JobRow, seen.id), s.get(Attempt, opened.id)
                    status = self.executor.poll(attempt.handle)
                    self._close_attempt(s, attempt, now, "cancelled", list(status.exit_codes))
                    job.state, job.finished_at, job.allocation = CANCELLED, now, None
                    s.add(Event(job_id=job.id, at=now, kind="cancelled", message="cancelled"))
        return finished

    def _settle(self, s: Session, job: JobRow, attempt: Attempt, status: AttemptStatus,
                now: float) -> None:
        """An attempt ended on its own: success, failure (retry with back-off), or resize."""
        outcome = status.outcome()
        self._close_attempt(s, attempt, now, outcome, list(status.exit_codes))
        if outcome == "succeeded":
            job.state, job.finished_at, job.allocation = SUCCEEDED, now, None
            s.add(Event(job_id=job.id, at=now, kind="succeeded", message="all replicas exited 0"))
            return
        if outcome == "resize":
            why = status.note or "replicas checkpointed and asked to be restarted"
            self._requeue(s, job, now, why)
            return
        job.failures += 1
        codes = ", ".join(str(c) for c in status.exit_codes)
        limit = self.facts.spec(job).max_restarts
        if job.failures > limit:
            tail = log_tail(self.log_dir(job.id), attempt.number)
            job.state, job.finished_at, job.allocation = FAILED, now, None
            job.message = f"failed {job.failures} time(s) (exit codes {codes}); log tail:\n{tail}"
            job.reason = reasons.failed_reason(codes, job.failures, limit)
            s.add(Event(job_id=job.id, at=now, kind="failed",
                        message=f"exit codes {codes}; no retries left (max_restarts={limit})"))
            return
        delay = self.config.retry_backoff_s * 2 ** (job.failures - 1)
        job.retry_at = now + delay
        self._requeue(s, job, now, f"exit codes {codes}; retry {job.failures} of {limit} "
                                   f"in {delay:.0f} s")
        job.reason = reasons.retry_reason(codes, delay, job.failures, limit)

    # ---- deciding ------------------------------------------------------------------------------

    def decide(self, jobs: list[JobRow], cluster: ClusterView,
               now: float) -> dict[str, Allocation]:
        """Allocations for every active job that should run now, within quotas and budgets."""
        decision = decide(jobs, self.facts, cluster, now, self.policy,
                                restart_s=self.config.restart_s, quotas=self.config.quotas)
        wanted = decision.within_quotas
        if self.budgets is not None:
            wanted = self.budgets.enforce(self.store, wanted, eligible(jobs, now), cluster, now)
        self.decision = replace(decision, granted=wanted)
        return wanted

    # ---- applying ------------------------------------------------------------------------------

    def apply(self, jobs: list[JobRow], wanted: dict[str, Allocation],
              now: float) -> tuple[int, int]:
        """Stop what changes, then launch what should run; returns (stopped, started)."""
        changing: list[tuple[JobRow, Attempt | None]] = []
        with self.store.session() as s:
            for seen in jobs:
                # Read afresh: the API may have cancelled the job since the round began.
                job = s.get(JobRow, seen.id)
                if job is None or job.state != seen.state or job.cancel_requested:
                    continue
                current = Allocation.from_dict(job.allocation) if job.allocation else None
                target = wanted.get(job.id)
                if job.state == RUNNING and target is not None and target.same_as(current):
                    continue
                if job.state == QUEUED and target is None:
                    continue
                spec = self.facts.spec(job)
                if not spec.adaptive and job.state == RUNNING and not spec.preemptible:
                    continue  # never preempted
                attempt = self._open_attempt(s, job.id) if job.state != QUEUED else None
                if attempt is not None:
                    job.state = RESTARTING
                    s.add(Event(job_id=job.id, at=now, kind="resizing" if target else "preempted",
                                message=f"to {target.to_dict() if target else 'the queue'}"))
                changing.append((job, attempt))
        stopping = [a for _, a in changing if a is not None]
        if stopping:
            self.executor.stop([a.handle for a in stopping], self.config.grace_s)
        started = 0
        for job, attempt in changing:
            target = wanted.get(job.id)
            with self.store.session() as s:
                job = s.get(JobRow, job.id)
                if attempt is not None:
                    attempt = s.get(Attempt, attempt.id)
                    status = self.executor.poll(attempt.handle)
                    self._close_attempt(s, attempt, now, "stopped", list(status.exit_codes))
                    if status.outcome() == "succeeded":  # it finished while being stopped
                        job.state, job.finished_at, job.allocation = SUCCEEDED, now, None
                        continue
                    job.restarts += 1
                if target is None:
                    lost = attempt is not None and LOST in (attempt.exit_codes or [])
                    why = status.note if lost else "preempted: its GPUs went to other jobs"
                    self._requeue(s, job, now, why)
                    continue
                number = (s.scalar(select(Attempt.number).where(Attempt.job_id == job.id)
                                   .order_by(Attempt.number.desc())) or 0) + 1
                new = Attempt(job_id=job.id, number=number, allocation=target.to_dict(),
                              handle={}, started_at=now)
                s.add(new)
                s.add(AllocationRow(job_id=job.id, allocation=target.to_dict(), start=now))
                job.state, job.allocation, job.retry_at = RUNNING, target.to_dict(), None
                job.reason = reasons.running_reason(target, number)
                job.started_at = job.started_at or now
                s.add(Event(job_id=job.id, at=now, kind="started",
                            message=f"attempt {number} on {target.num_replicas} × {target.kind}"))
            # Committed above; now act, then record the handle.
            try:
                handle = self.executor.launch(self._launch(job, number, target))
            except Exception as err:  # a launch failure is the job's failure, not the loop's
                log.warning("job %s: launch failed: %s", job.id, err)
                handle = {"error": str(err)}
                with self.store.session() as s:
                    job, new = s.get(JobRow, job.id), s.get(Attempt, new.id)
                    new.handle = handle
                    self._settle(s, job, new, AttemptStatus([127], str(err)), now)
                    job.message = f"launch failed: {err}"
                    job.reason = f"launch failed ({err}); {job.reason}"
                continue
            with self.store.session() as s:
                s.get(Attempt, new.id).handle = handle
            started += 1
        return len(stopping), started

    def _launch(self, job: JobRow, number: int, target: Allocation) -> Launch:
        checkpoints = self.checkpoint_dir(job)
        checkpoints.mkdir(parents=True, exist_ok=True)
        return Launch(
            job_id=job.id, attempt=number, spec=self.facts.spec(job),
            allocation=target,
            env={"THRIFTY_JOB_ID": job.id, "THRIFTY_CHECKPOINT_DIR": str(checkpoints)},
            log_dir=self.log_dir(job.id),
        )

"""The scheduling loop: read the jobs' reports, run the policy, apply the difference.

A round (1) collects finished attempts and cancels, (2) takes the newest GoodputModel each running
job reported, (3) places rigid jobs on what is free (they get exactly what they ask for and are
never moved) and lets the policy share the rest among adaptive jobs, within team quotas, and
(4) applies what changed: a resize is a checkpoint-restart (SIGTERM, checkpoint at the next step
boundary, relaunch on the new allocation), a job left without GPUs goes back to the queue.
Every decision is committed to the store before the executor is told, so a control plane that
dies mid-round finds on restart what it was doing (`recover`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from thrifty.cluster.budgets import LiveBudgets
from thrifty.cluster.executor import LOST, AttemptStatus, Executor, Launch
from thrifty.cluster.schema import AllocationRow, Attempt, Event, JobRow
from thrifty.cluster.spec import JobSpec
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
from thrifty.goodput import GoodputModel
from thrifty.goodput.model import growth_cap
from thrifty.policy.base import Allocation, ClusterView, JobView, Policy
from thrifty.policy.placement import free_gpus, most_free, shrink, take
from thrifty.policy.quota import QuotaJob, enforce_quotas

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


class Scheduler:
    """Owns the decisions; the store owns the state; the executor owns the processes."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        policy: Policy,
        home: Path,
        quotas: Mapping[str, Mapping[str, int]] | None = None,
        stop_grace_s: float = 60.0,
        retry_backoff_s: float = 5.0,
        restart_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        budgets: LiveBudgets | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.policy = policy
        self.home = home
        self.quotas = dict(quotas or {})
        self.stop_grace_s = stop_grace_s
        self.retry_backoff_s = retry_backoff_s
        self.restart_seconds = restart_seconds  # what a resize costs a job, for the policy
        self.clock = clock
        self.budgets = budgets
        self._last_round: float | None = None

    # ---- paths ---------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.home / "jobs" / job_id

    def log_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "logs"

    def checkpoint_dir(self, job: JobRow) -> Path:
        given = job.spec.get("checkpoint_dir")
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
        t0 = time.perf_counter()
        stats = RoundStats()
        now = self.clock()
        elapsed = 0.0 if self._last_round is None else max(now - self._last_round, 0.0)
        self._last_round = now
        stats.finished = self._collect(now, elapsed)
        with self.store.session() as s:
            jobs = list(s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE_STATES))))
        cluster = ClusterView(self.executor.nodes())
        t1 = time.perf_counter()
        wanted = self._decide(jobs, cluster, now)
        stats.policy_s = time.perf_counter() - t1
        stats.allocations = wanted
        stats.stopped, stats.started = self._apply(jobs, wanted, now)
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
        job.state, job.allocation = QUEUED, None
        s.add(Event(job_id=job.id, at=now, kind="requeued", message=why))

    def _collect(self, now: float, elapsed: float) -> int:
        """Account service, take reports, settle finished attempts and cancels."""
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
            self.executor.stop([a.handle for _, a in to_cancel], self.stop_grace_s)
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
        limit = int(job.spec.get("max_restarts", 0))
        if job.failures > limit:
            tail = log_tail(self.log_dir(job.id), attempt.number)
            job.state, job.finished_at, job.allocation = FAILED, now, None
            job.message = f"failed {job.failures} time(s) (exit codes {codes}); log tail:\n{tail}"
            s.add(Event(job_id=job.id, at=now, kind="failed",
                        message=f"exit codes {codes}; no retries left (max_restarts={limit})"))
            return
        delay = self.retry_backoff_s * 2 ** (job.failures - 1)
        job.retry_at = now + delay
        self._requeue(s, job, now, f"exit codes {codes}; retry {job.failures} of {limit} "
                                   f"in {delay:.0f} s")

    # ---- deciding ------------------------------------------------------------------------------

    def _view(self, job: JobRow, now: float) -> JobView:
        spec = job.spec
        resources = spec.get("resources", {})
        model = GoodputModel.from_dict(job.report["model"]) if job.report else None
        limits = model.limits if model else None
        top = int(resources.get("max_replicas", 1))
        kind_explored = max(model.explored.values(), default=0) if model else 0
        cap = min(growth_cap(kind_explored, limits), top) if limits else 1
        limit = min(limits.max_replicas(), top) if limits else top
        return JobView(
            id=job.id, submit_time=job.submitted_at, application=job.name, owner=job.owner,
            model=model, limits=limits,
            allocation=Allocation.from_dict(job.allocation) if job.allocation else None,
            restarts=job.restarts, attained_service=job.attained_service,
            min_replicas=int(resources.get("min_replicas", 1)),
            max_replicas=max(cap, int(resources.get("min_replicas", 1))),
            replica_limit=limit,
            requested_replicas=int(resources.get("max_replicas", 1)),
            restart_seconds=self.restart_seconds,
        )

    def _decide(self, jobs: list[JobRow], cluster: ClusterView,
                now: float) -> dict[str, Allocation]:
        """Allocations for every active job that should run now."""
        eligible = [j for j in jobs if j.state != QUEUED or (j.retry_at or 0) <= now]
        rigid = [j for j in eligible if j.spec.get("mode") == "rigid"]
        adaptive = [j for j in eligible if j.spec.get("mode") != "rigid"]
        wanted: dict[str, Allocation] = {}
        free = free_gpus(cluster, [])
        # Rigid jobs first: running ones keep what they have; waiting ones, by priority then age.
        for job in sorted(rigid, key=lambda j: (j.allocation is None, -j.priority,
                                               j.submitted_at)):
            alloc = Allocation.from_dict(job.allocation) if job.allocation else None
            if alloc is None or any(free.get(n, 0) < c for n, c in alloc.gpus.items()):
                alloc = self._place_rigid(job, free, cluster)
            if alloc is not None:
                take(free, alloc)
                wanted[job.id] = alloc
        remaining = ClusterView(tuple(
            type(n)(n.name, n.gpu_kind, free[n.name], n.price_per_hour)
            for n in cluster.nodes if free[n.name] > 0
        ))
        views = [self._view(j, now) for j in adaptive]
        if views and remaining.nodes:
            decided = self.policy.allocate(views, remaining, now)
            by_id = {v.id: v for v in views}
            for jid, alloc in decided.items():
                view, allowed = by_id.get(jid), self._allowed(jid, adaptive)
                if view is None or (allowed and alloc.kind not in allowed):
                    continue
                if alloc.num_replicas > (view.replica_limit or alloc.num_replicas):
                    alloc = shrink(alloc, int(view.replica_limit or 1))
                if alloc.num_replicas >= max(view.min_replicas, 1):
                    wanted[jid] = alloc
        quota_jobs = [
            QuotaJob(j.id, j.team, j.priority, j.submitted_at,
                     int(j.spec.get("resources", {}).get("min_replicas", 1)),
                     j.spec.get("mode") != "rigid",
                     Allocation.from_dict(j.allocation) if j.allocation else None)
            for j in eligible
        ]
        wanted = enforce_quotas(wanted, quota_jobs, self.quotas)
        if self.budgets is not None:
            wanted = self.budgets.enforce(self.store, wanted, eligible, cluster, now)
        return wanted

    @staticmethod
    def _allowed(job_id: str, jobs: list[JobRow]) -> tuple[str, ...]:
        for job in jobs:
            if job.id == job_id:
                resources = job.spec.get("resources", {})
                if resources.get("cpu_only"):
                    return ("cpu",)
                return tuple(resources.get("gpu_kinds") or ())
        return ()

    def _place_rigid(self, job: JobRow, free: dict[str, int],
                     cluster: ClusterView) -> Allocation | None:
        replicas = int(job.spec.get("resources", {}).get("max_replicas", 1))
        kinds = self._allowed(job.id, [job]) or cluster.kinds
        for kind in kinds:
            alloc = most_free(replicas, free, cluster, kind)
            if alloc is not None:
                return alloc
        return None

    # ---- applying ------------------------------------------------------------------------------

    def _apply(self, jobs: list[JobRow], wanted: dict[str, Allocation],
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
                rigid_keep = job.spec.get("mode") == "rigid" and job.state == RUNNING
                if rigid_keep and not job.spec.get("preemptible", True):
                    continue  # never preempted
                attempt = self._open_attempt(s, job.id) if job.state != QUEUED else None
                if attempt is not None:
                    job.state = RESTARTING
                    s.add(Event(job_id=job.id, at=now, kind="resizing" if target else "preempted",
                                message=f"to {target.to_dict() if target else 'the queue'}"))
                changing.append((job, attempt))
        stopping = [a for _, a in changing if a is not None]
        if stopping:
            self.executor.stop([a.handle for a in stopping], self.stop_grace_s)
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
                continue
            with self.store.session() as s:
                s.get(Attempt, new.id).handle = handle
            started += 1
        return len(stopping), started

    def _launch(self, job: JobRow, number: int, target: Allocation) -> Launch:
        checkpoints = self.checkpoint_dir(job)
        checkpoints.mkdir(parents=True, exist_ok=True)
        return Launch(
            job_id=job.id, attempt=number, spec=JobSpec.model_validate(job.spec),
            allocation=target,
            env={"THRIFTY_JOB_ID": job.id, "THRIFTY_CHECKPOINT_DIR": str(checkpoints)},
            log_dir=self.log_dir(job.id),
        )

"""Deciding a round: which active job should run where, from the store's rows.

Rigid jobs are placed first on what is free (exactly what they ask for, and a running one is never
moved); the policy shares the rest among adaptive jobs, seeing each through the same `JobView`
the simulator builds (`thrifty.policy.views.job_view`); its answer is held to the same rules
(`check_answer`), then to team quotas.

Rows are parsed into typed values once (`JobFacts`): a spec never changes after submission, and a
report is parsed again only when a newer one has been stored, so a round over a hundred reporting
jobs parses only the reports that changed since the last one.

A policy that `profiles_on_arrival` (Sia, thrifty) is, in the simulator, handed each new job
already measured on one GPU of every kind, at no cost. A live job's model holds only what it has
really trained on, and measuring every kind on arrival would take real GPU time on each kind
(a short attempt per kind) that the executors do not offer; so live, such a policy sees a new job
as any policy does, without a model (one replica, on whichever kind it picks), until its first
report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from thrifty.cluster.schema import JobRow
from thrifty.cluster.spec import JobSpec
from thrifty.cluster.states import QUEUED
from thrifty.contract import Allocation, JobReport
from thrifty.errors import ThriftyError
from thrifty.policy.base import ClusterView, JobView, NodeView, Policy
from thrifty.policy.carbon_aware import CarbonAwarePolicy
from thrifty.policy.oracle import ModelOracle
from thrifty.policy.placement import free_gpus, most_free, take
from thrifty.policy.quota import QuotaJob, enforce_quotas
from thrifty.policy.views import check_answer, job_view

log = logging.getLogger(__name__)


class JobFacts:
    """Typed specs and reports of stored jobs, each parsed once.

    A report is cached under its job and the time it was stored (`reported_at`), so a model that
    has not changed is never parsed twice; `parsed` counts the reports parsed so far. A report
    that does not parse is logged once and treated as none (the job goes on as if unreported).
    """

    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}
        self._reports: dict[str, tuple[float | None, JobReport | None]] = {}
        self.parsed = 0

    def spec(self, job: JobRow) -> JobSpec:
        spec = self._specs.get(job.id)
        if spec is None:
            spec = self._specs[job.id] = JobSpec.model_validate(job.spec)
        return spec

    def report(self, job: JobRow) -> JobReport | None:
        if not job.report:
            return None
        known = self._reports.get(job.id)
        if known is not None and known[0] == job.reported_at:
            return known[1]
        self.parsed += 1
        try:
            report: JobReport | None = JobReport.from_dict(job.report)
        except ThriftyError as err:
            log.warning("job %s: ignoring its report: %s", job.id, err)
            report = None
        self._reports[job.id] = (job.reported_at, report)
        return report

    def keep_only(self, job_ids: Iterable[str]) -> None:
        """Forget jobs no longer active, so the cache stays as large as the active set."""
        keep = set(job_ids)
        self._specs = {k: v for k, v in self._specs.items() if k in keep}
        self._reports = {k: v for k, v in self._reports.items() if k in keep}


def live_view(job: JobRow, spec: JobSpec, report: JobReport | None, restart_s: float,
              with_oracle: bool = False) -> JobView:
    """What a policy sees of one stored adaptive job; `with_oracle` for policies that need one
    (answered from the job's own model, when it has reported one)."""
    model = report.model if report is not None else None
    resources = spec.resources
    return job_view(
        id=job.id,
        submit_time=job.submitted_at,
        application=job.name,
        owner=job.owner,
        model=model,
        allocation=Allocation.from_dict(job.allocation) if job.allocation else None,
        restarts=job.restarts,
        attained_service=job.attained_service,
        min_replicas=resources.min_replicas,
        replica_ceiling=resources.max_replicas,
        requested_replicas=resources.max_replicas,
        requested_batch_size=spec.batch_size,
        restart_s=restart_s,
        deadline=None if spec.deadline_s is None else job.submitted_at + spec.deadline_s,
        oracle=ModelOracle(model) if with_oracle and model is not None else None,
    )


def place_rigid(spec: JobSpec, free: dict[str, int], cluster: ClusterView) -> Allocation | None:
    """A rigid job's exact request on the allowed kind with the most free GPUs in one place."""
    for kind in spec.resources.allowed_kinds() or cluster.kinds:
        alloc = most_free(spec.resources.max_replicas, free, cluster, kind)
        if alloc is not None:
            return alloc
    return None


def eligible(jobs: Sequence[JobRow], now: float) -> list[JobRow]:
    """The active jobs that may run now: all but queued ones still waiting out a retry back-off."""
    return [j for j in jobs if j.state != QUEUED or (j.retry_at or 0) <= now]


@dataclass(frozen=True)
class RoundDecision:
    """What each stage of a round granted: rigid placements and the policy's checked answer
    (`proposed`), what team quotas left of it (`within_quotas`), what budgets left of that
    (`granted`, what runs), and the jobs the policy held back for a greener start (`held`). Kept
    so that a job that did not start can be told why (`thrifty.cluster.reasons`)."""

    proposed: dict[str, Allocation] = field(default_factory=dict)
    within_quotas: dict[str, Allocation] = field(default_factory=dict)
    granted: dict[str, Allocation] = field(default_factory=dict)
    held: frozenset[str] = frozenset()


def decide(
    jobs: Sequence[JobRow],
    facts: JobFacts,
    cluster: ClusterView,
    now: float,
    policy: Policy,
    *,
    restart_s: float,
    quotas: Mapping[str, Mapping[str, int]],
) -> RoundDecision:
    """Allocations for the active `jobs` that should run now, with what each stage granted
    (budgets are the caller's: `granted` is `within_quotas` here)."""
    ready = eligible(jobs, now)
    specs = {j.id: facts.spec(j) for j in ready}
    rigid = [j for j in ready if not specs[j.id].adaptive]
    adaptive = [j for j in ready if specs[j.id].adaptive]
    wanted: dict[str, Allocation] = {}
    free = free_gpus(cluster, [])
    # Rigid jobs first: running ones keep what they have; waiting ones, by priority then age.
    for job in sorted(rigid, key=lambda j: (j.allocation is None, -j.priority, j.submitted_at)):
        alloc = Allocation.from_dict(job.allocation) if job.allocation else None
        if alloc is None or any(free.get(n, 0) < c for n, c in alloc.gpus.items()):
            alloc = place_rigid(specs[job.id], free, cluster)
        if alloc is not None:
            take(free, alloc)
            wanted[job.id] = alloc
    remaining = ClusterView(tuple(
        NodeView(n.name, n.gpu_kind, free[n.name], n.price_per_hour)
        for n in cluster.nodes if free[n.name] > 0
    ))
    oracle = policy.needs_oracle
    views = [live_view(j, specs[j.id], facts.report(j), restart_s, oracle) for j in adaptive]
    if views and remaining.nodes:
        answer = policy.allocate(views, remaining, now)
        allowed = {j.id: specs[j.id].resources.allowed_kinds() for j in adaptive}
        checked = check_answer(answer, views, remaining, allowed)
        for error in checked.errors:
            log.warning("policy %s %s", policy.name, error)
        wanted.update(checked.allocations)
    quota_jobs = [
        QuotaJob(j.id, j.team, j.priority, j.submitted_at,
                 specs[j.id].resources.min_replicas, specs[j.id].adaptive,
                 Allocation.from_dict(j.allocation) if j.allocation else None)
        for j in ready
    ]
    within = enforce_quotas(wanted, quota_jobs, dict(quotas))
    held = frozenset(policy.held()) if isinstance(policy, CarbonAwarePolicy) else frozenset()
    return RoundDecision(wanted, within, within, held)

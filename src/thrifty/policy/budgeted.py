"""Metering and budget caps around any policy, without touching the policy or the loop.

`MeteredPolicy` passes every call through to the policy it wraps and records what was granted:
one usage segment per job and allocation, priced from the node, which the ledger turns into USD,
kWh and kg CO2e. `BudgetedPolicy` adds hard caps: before each round it charges the last round's
allocations to their owners, then

- withholds jobs whose owner cannot afford even the job's smallest allocation for one more interval
  (the wrapped policy never sees them, so other teams get the whole cluster), and
- trims what the wrapped policy granted so that each owner's monthly USD and kg CO2e and its team's
  spend rate stay within their caps for the next interval: adaptive jobs shrink, rigid ones pause.

A paused job keeps its checkpoint (in the simulator, its progress) and resumes when money is
available again. The cap holds to within one interval's spend even if the interval is
mis-estimated, because nothing is granted to an owner who has already reached a cap. `now` is
injected, so the same object serves the simulator and a live scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from thrifty.accounting.alerts import AlertSink, log_sink
from thrifty.accounting.budgets import Alert, BudgetBook, SpendTracker
from thrifty.accounting.ledger import UsageSegment, split_owner
from thrifty.accounting.tariff import Tariff
from thrifty.policy.base import (
    Allocation,
    ClusterView,
    JobView,
    NodeView,
    Policy,
    PolicyWrapper,
)
from thrifty.policy.placement import keep_fullest


@dataclass
class _Open:
    allocation: Allocation
    owner: str
    start_s: float
    usd_per_hour: float
    restart_s: float


@dataclass(frozen=True)
class CapEvent:
    """A budget decision, for reports and tests: `action` is withheld, shrunk or paused."""

    now_s: float
    job: str
    owner: str
    action: str
    gpus_before: int
    gpus_after: int


# What each cap that applies to an owner still allows this interval, keyed (scope, name, metric):
# metric usd and kgco2e for the period's budget, usd_per_hour for a team's spend rate.
Headroom = dict[tuple[str, str, str], float]


@dataclass(frozen=True)
class Claim:
    """A job's claim on its owner's budget in one round: what the caps are checked against."""

    id: str
    owner: str
    submit_time: float
    allocation: Allocation | None  # what it holds now (None: waiting)
    adaptive: bool  # may run on fewer GPUs than granted


def budget_headroom(book: BudgetBook, tracker: SpendTracker, owners: Iterable[str],
                    now: float) -> Headroom:
    """What every cap that applies to these owners still allows at `now`."""
    left: Headroom = {}
    for owner in owners:
        for budget in book.for_owner(owner):
            for metric in ("usd", "kgco2e"):
                limit = budget.limit(metric)  # type: ignore[arg-type]
                if limit is not None:
                    spent = tracker.spent(budget.scope, budget.name, metric, now)  # type: ignore[arg-type]
                    left[(budget.scope, budget.name, metric)] = limit - spent
            if budget.scope == "team" and budget.usd_per_hour is not None:
                left[("team", budget.name, "usd_per_hour")] = budget.usd_per_hour
    return left


def demand(usd_per_hour: float, kg_per_hour: float, hours: float) -> dict[str, float]:
    """What holding an allocation for `hours` draws from each kind of cap."""
    return {"usd": usd_per_hour * hours, "kgco2e": kg_per_hour * hours,
            "usd_per_hour": usd_per_hour}


def _keys(owner: str, left: Headroom) -> list[tuple[str, str, str]]:
    team, user = split_owner(owner)
    mine = {("team", team), ("user", f"{team}/{user}")}
    return [k for k in left if k[:2] in mine]


def fits(owner: str, need: dict[str, float], left: Headroom) -> bool:
    return all(need[key[2]] <= left[key] + 1e-9 for key in _keys(owner, left))


def _take(owner: str, need: dict[str, float], left: Headroom) -> None:
    for key in _keys(owner, left):
        left[key] -= need[key[2]]


def trim_to_budgets(
    granted: dict[str, Allocation],
    claims: Sequence[Claim],
    left: Headroom,
    need: Callable[[Allocation], dict[str, float]],
    now: float,
) -> list[CapEvent]:
    """Trim `granted` (in place) so that every owner stays within its caps for one interval.

    Allocations that continue unchanged are served first (taking them away costs a restart),
    then by age. An adaptive job that does not fit shrinks to the most GPUs that do, keeping its
    fullest nodes; anything else that does not fit is paused. `left` is drawn down as it goes.
    """
    events: list[CapEvent] = []
    order = sorted(
        (c for c in claims if c.id in granted),
        key=lambda c: (not granted[c.id].same_as(c.allocation), c.submit_time, c.id),
    )
    for claim in order:
        alloc = granted[claim.id]
        sizes = range(alloc.num_replicas, 0, -1) if claim.adaptive else (alloc.num_replicas,)
        fitted = None
        for size in sizes:
            candidate = alloc if size == alloc.num_replicas else keep_fullest(alloc, size)
            if fits(claim.owner, need(candidate), left):
                fitted = candidate
                break
        if fitted is None:
            del granted[claim.id]
            events.append(CapEvent(now, claim.id, claim.owner, "paused", alloc.num_replicas, 0))
            continue
        if fitted.num_replicas < alloc.num_replicas:
            granted[claim.id] = fitted
            events.append(CapEvent(now, claim.id, claim.owner, "shrunk", alloc.num_replicas,
                                   fitted.num_replicas))
        _take(claim.owner, need(fitted), left)
    return events


class MeteredPolicy(PolicyWrapper):
    """Any policy, with a usage segment recorded for every allocation it grants."""

    def __init__(self, inner: Policy, tariff: Tariff):
        super().__init__(inner)
        self.tariff = tariff
        self.segments: list[UsageSegment] = []
        self._open: dict[str, _Open] = {}
        self._last_now: float | None = None
        self._gap: float | None = None
        self._node_price: dict[str, float] = {}

    # --- prices ----------------------------------------------------------------------------
    def gpu_usd_per_hour(self, node: NodeView) -> float:
        if node.name not in self._node_price:
            self._node_price[node.name] = self.tariff.gpu_usd_per_hour(
                node.gpu_kind, node.num_gpus, node.price_per_hour
            )
        return self._node_price[node.name]

    def usd_per_hour(self, allocation: Allocation, nodes: dict[str, NodeView]) -> float:
        return math.fsum(
            count * self.gpu_usd_per_hour(nodes[name]) for name, count in allocation.gpus.items()
        )

    # --- the round -------------------------------------------------------------------------
    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        if self._last_now is not None and now > self._last_now:
            self._gap = now - self._last_now
            self.on_elapsed(self._last_now, now)
        result = self.decide(jobs, cluster, now)
        self._record(jobs, cluster, result, now)
        self._last_now = now
        return result

    def decide(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        return self.inner.allocate(jobs, cluster, now)

    def on_elapsed(self, start_s: float, end_s: float) -> None:
        """Called with the span the open allocations have just run for."""

    def _close(self, job: str, end_s: float) -> None:
        seg = self._open.pop(job)
        if end_s > seg.start_s:
            self.segments.append(UsageSegment(
                job, seg.owner, seg.allocation.kind, seg.allocation.num_replicas, seg.start_s,
                end_s, seg.usd_per_hour, seg.restart_s,
            ))

    def _record(
        self, jobs: Sequence[JobView], cluster: ClusterView, result: dict[str, Allocation],
        now: float,
    ) -> None:
        nodes = {n.name: n for n in cluster.nodes}
        views = {j.id: j for j in jobs}
        for job in list(self._open):
            new = result.get(job)
            if new is None or not new.same_as(self._open[job].allocation):
                self._close(job, now)
        for job, alloc in result.items():
            if job in self._open or alloc.num_replicas == 0:
                continue
            view = views.get(job)
            restarting = view is None or not alloc.same_as(view.allocation)
            self._open[job] = _Open(
                alloc, view.owner if view else "", now, self.usd_per_hour(alloc, nodes),
                (view.restart_s if view else 0.0) if restarting else 0.0,
            )

    def finish(self, end_s: float | None = None) -> list[UsageSegment]:
        """Close every open segment (default: one interval after the last round) and return all
        segments. Called once the run is over."""
        if end_s is None:
            end_s = (self._last_now or 0.0) + (self._gap or 0.0)
        if self._last_now is not None and end_s > self._last_now:
            self.on_elapsed(self._last_now, end_s)
            self._last_now = end_s
        for job in list(self._open):
            self._close(job, end_s)
        return self.segments


class BudgetedPolicy(MeteredPolicy):
    """A metered policy that enforces the budgets of `book` (see the module docstring)."""

    def __init__(
        self,
        inner: Policy,
        tariff: Tariff,
        book: BudgetBook,
        sinks: Sequence[AlertSink] = (log_sink,),
        interval_s: float = 60.0,
    ):
        super().__init__(inner, tariff)
        self.book = book
        self.tracker = SpendTracker(book)
        self.sinks = tuple(sinks)
        self.default_interval_s = interval_s
        self.alerts: list[Alert] = []
        self.events: list[CapEvent] = []
        self._withheld: set[str] = set()

    # --- charging ---------------------------------------------------------------------------
    def on_elapsed(self, start_s: float, end_s: float) -> None:
        hours = (end_s - start_s) / 3600
        for seg in self._open.values():
            kg = seg.allocation.num_replicas * self.tariff.kg_per_gpu_hour(
                seg.allocation.kind, start_s, end_s) * hours
            for alert in self.tracker.charge(seg.owner, seg.usd_per_hour * hours, kg, start_s):
                self.alerts.append(alert)
                for sink in self.sinks:
                    sink(alert)

    # --- deciding ---------------------------------------------------------------------------
    def decide(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        hours = (self._gap or self.default_interval_s) / 3600
        nodes = {n.name: n for n in cluster.nodes}
        cheapest_usd_h = min(self.gpu_usd_per_hour(n) for n in cluster.nodes)
        kg_h = {
            kind: self.tariff.kg_per_gpu_hour(kind, now, now + hours * 3600)
            for kind in cluster.kinds
        }
        left = budget_headroom(self.book, self.tracker, {j.owner for j in jobs}, now)
        eligible = []
        for job in jobs:
            smallest = 1 if self.adaptive else max(job.requested_replicas or 1, 1)
            need = demand(smallest * cheapest_usd_h, smallest * min(kg_h.values()), hours)
            if fits(job.owner, need, left):
                eligible.append(job)
                self._withheld.discard(job.id)
            elif job.id not in self._withheld:
                self._withheld.add(job.id)
                held = job.allocation.num_replicas if job.allocation else 0
                self.events.append(CapEvent(now, job.id, job.owner, "withheld", held, 0))
        result = dict(self.inner.allocate(eligible, cluster, now))
        claims = [Claim(j.id, j.owner, j.submit_time, j.allocation, self.adaptive)
                  for j in eligible]
        self.events += trim_to_budgets(
            result, claims, left,
            lambda a: demand(self.usd_per_hour(a, nodes), a.num_replicas * kg_h[a.kind], hours),
            now,
        )
        return result


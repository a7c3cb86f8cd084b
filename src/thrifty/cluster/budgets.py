"""Budgets on the live cluster: the caps simulations enforce, with spend read from the store.

Each round, what every team and user has spent this period is priced afresh from the allocation
history (so a restarted server forgets nothing), alerts newly due go out once (each is recorded as
an event, which also keeps it from going out again after a restart), and the allocations the
scheduler wants are trimmed so that no owner passes a cap within the next interval: adaptive jobs
shrink, others pause. A paused job goes back to the queue through the scheduler's usual
pre-emption (a stop signal, a checkpoint, then exit), so it is never killed without one, and it
resumes when its owner has money again. Periods are `period_days` long, counted from the Unix
epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from sqlalchemy import select

from thrifty.accounting.alerts import AlertSink, WebhookSink, log_sink
from thrifty.accounting.budgets import Alert, BudgetBook, SpendTracker
from thrifty.accounting.ledger import Ledger
from thrifty.accounting.tariff import Tariff
from thrifty.cluster.schema import Event, JobRow
from thrifty.cluster.store import Store
from thrifty.cluster.usage import live_ledger
from thrifty.policy.base import Allocation, ClusterView, NodeView
from thrifty.policy.budgeted import CapEvent, Claim, budget_headroom, demand, trim_to_budgets

log = logging.getLogger(__name__)

ALERT_EVENT = "budget-alert"


def charge_ledger(tracker: SpendTracker, ledger: Ledger, period_start: float) -> list[Alert]:
    """Charge the part of every ledger line that falls in the period starting at `period_start`
    (a line's money and CO2 are spread evenly over its span); returns the thresholds crossed."""
    alerts: list[Alert] = []
    for line in ledger.lines:
        start = max(line.start_s, period_start)
        span = line.end_s - line.start_s
        if line.end_s <= start or span <= 0:
            continue
        part = (line.end_s - start) / span
        alerts += tracker.charge(f"{line.team}/{line.user}", line.usd * part,
                                 line.kgco2e * part, start)
    return alerts


def _tag(alert: Alert) -> str:
    return f"[{alert.scope} {alert.name} {alert.metric} {alert.threshold:g} period {alert.period}]"


class LiveBudgets:
    """The budget book, the tariff that prices spend, and where alerts go."""

    def __init__(self, book: BudgetBook, tariff: Tariff, interval_s: float,
                 sinks: Sequence[AlertSink] | None = None) -> None:
        self.book = book
        self.tariff = tariff
        self.interval_s = interval_s
        if sinks is None:
            sinks = [log_sink] + ([WebhookSink(book.webhook)] if book.webhook else [])
        self.sinks = tuple(sinks)
        self._capped: set[str] = set()

    def spend(self, store: Store, nodes: Iterable[NodeView], now: float
              ) -> tuple[SpendTracker, list[Alert]]:
        """What every team and user has spent in the current period, up to `now`, and the alert
        thresholds that spending has crossed (sent or not)."""
        tracker = SpendTracker(self.book)
        period_start = tracker.period(now) * self.book.period_s
        ledger = live_ledger(store, self.tariff, now, nodes, since=period_start)
        return tracker, charge_ledger(tracker, ledger, period_start)

    def enforce(self, store: Store, wanted: dict[str, Allocation], jobs: Sequence[JobRow],
                cluster: ClusterView, now: float) -> dict[str, Allocation]:
        """`wanted`, trimmed to what every owner can afford for one more interval."""
        tracker, due = self.spend(store, cluster.nodes, now)
        self._alert(store, due, now)
        owners = {f"{j.team}/{j.owner}" for j in jobs}
        left = budget_headroom(self.book, tracker, owners, now)
        if not left:
            return wanted
        hours = self.interval_s / 3600
        nodes = {n.name: n for n in cluster.nodes}

        def need(alloc: Allocation) -> dict[str, float]:
            usd_h = math.fsum(
                count * self.tariff.gpu_usd_per_hour(alloc.kind, nodes[name].num_gpus,
                                                     nodes[name].price_per_hour)
                for name, count in alloc.gpus.items()
            )
            kg_h = alloc.num_replicas * self.tariff.kg_per_gpu_hour(alloc.kind, now,
                                                                    now + self.interval_s)
            return demand(usd_h, kg_h, hours)

        claims = [
            Claim(j.id, f"{j.team}/{j.owner}", j.submitted_at,
                  Allocation.from_dict(j.allocation) if j.allocation else None,
                  j.spec.get("mode") != "rigid")
            for j in jobs
        ]
        granted = dict(wanted)
        events = trim_to_budgets(granted, claims, left, need, now)
        self._record(store, events, now)
        return granted

    def _alert(self, store: Store, due: list[Alert], now: float) -> None:
        """Send each alert of this period once, ever: the events table remembers."""
        if not due:
            return
        with store.session() as s:
            sent = set(s.scalars(select(Event.message).where(Event.kind == ALERT_EVENT)))
            for alert in due:
                message = f"{alert.message()} {_tag(alert)}"
                if any(m.endswith(_tag(alert)) for m in sent):
                    continue
                s.add(Event(job_id=None, at=now, kind=ALERT_EVENT, message=message))
                sent.add(message)
                for sink in self.sinks:
                    sink(alert)

    def _record(self, store: Store, events: list[CapEvent], now: float) -> None:
        """An event on each job the caps newly stopped or shrank, saying why (not every round
        while they stay capped)."""
        fresh = [e for e in events if e.job not in self._capped]
        self._capped = {e.job for e in events}
        if not fresh:
            return
        with store.session() as s:
            for e in fresh:
                s.add(Event(job_id=e.job, at=now, kind="over-budget", message=(
                    f"{e.owner}'s budget allows {e.gpus_after} of the {e.gpus_before} GPUs "
                    "it would get for the next interval; " + (
                        "held back until money is available (a running job stops through "
                        "its checkpoint)" if e.action == "paused" else "shrunk"))))
        log.info("budget caps on %s", ", ".join(e.job for e in fresh))

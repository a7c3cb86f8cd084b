"""Ledgers, budgets, alerts and the webhook that carries them."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from thrifty.accounting.alerts import WebhookSink
from thrifty.accounting.budgets import BudgetBook, SpendTracker, load_budgets
from thrifty.accounting.carbon import StaticIntensity
from thrifty.accounting.energy import PowerModel
from thrifty.accounting.ledger import (
    JobFacts,
    Ledger,
    UsageSegment,
    build_ledger,
    report,
    spend_over_time,
)
from thrifty.errors import InputError

POWER = PowerModel({"T4": 70.0}, {"aws": "T4"}, pue=1.0, busy_utilisation=1.0,
                   idle_utilisation=0.0)


def small_ledger() -> Ledger:
    segments = [
        # job a: 2 GPUs for 1 h (30 s restart), then 4 GPUs for 1 h
        UsageSegment("a", "vision/alice", "aws", 2, 0, 3600, 2.0, 30),
        UsageSegment("a", "vision/alice", "aws", 4, 3600, 7200, 4.0, 30),
        UsageSegment("b", "nlp/bob", "aws", 1, 1800, 5400, 1.0, 0),
    ]
    facts = [
        JobFacts("a", "vision/alice", submit_s=0, completion_s=7000,
                 used_gpu_seconds={"aws": 6 * 3600 - 800}),
        JobFacts("b", "nlp/bob", submit_s=600, completion_s=5400, measured_kwh=0.5),
        JobFacts("c", "nlp/carol", submit_s=0),  # never ran
    ]
    return build_ledger(segments, facts, POWER, StaticIntensity(400))


def test_ledger_bills_allocations_and_splits_restart_and_idle_time() -> None:
    ledger = small_ledger()
    a, b, c = ledger.entries
    assert a.usd == pytest.approx(6.0) and a.gpu_hours == pytest.approx(6.0)
    assert a.restart_gpu_hours == pytest.approx((2 * 30 + 4 * 30) / 3600)
    assert a.idle_gpu_hours == pytest.approx(800 / 3600)
    assert a.idle_usd == pytest.approx(6.0 * 800 / (6 * 3600))
    assert a.kwh == pytest.approx(0.070 * (6 - 800 / 3600))  # idle draws nothing here
    assert a.kgco2e == pytest.approx(a.kwh * 0.4)
    assert (b.energy_source, b.kwh, b.queue_s) == ("measured", 0.5, 1200)
    assert c.gpu_hours == 0 and c.start_s is None
    assert (a.team, a.user) == ("vision", "alice")
    again = Ledger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert again.totals() == pytest.approx(ledger.totals())


def test_reports_group_and_cut_at_since() -> None:
    ledger = small_ledger()
    teams = {r.key: r for r in report(ledger, "team")}
    assert teams["vision"].usd == pytest.approx(6.0) and teams["nlp"].jobs == 2
    later = {r.key: r for r in report(ledger, "job", since_s=3600)}
    assert later["a"].usd == pytest.approx(4.0)
    assert later["b"].usd == pytest.approx(0.5)
    users = {r.key for r in report(ledger, "user")}
    assert users == {"vision/alice", "nlp/bob", "nlp/carol"}
    hourly = spend_over_time(ledger, 3600)
    assert sum(u for _, u, _ in hourly["vision"]) == pytest.approx(6.0)
    assert [t for t, _, _ in hourly["nlp"]] == [0.0, 3600.0]


BUDGETS = """
period_days = 1
alert_thresholds = [0.5, 1.0]
[teams.vision]
usd_per_month = 10
kgco2e_per_month = 2
usd_per_hour = 5
[users."vision/alice"]
usd_per_month = 4
"""


def test_budgets_load_and_the_tracker_raises_each_alert_once_per_period(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(BUDGETS)
    book = load_budgets(path)
    assert book.period_s == 86400
    tracker = SpendTracker(book)
    assert tracker.headroom("vision/alice", "usd", 0) == 4
    assert tracker.headroom("vision/bob", "usd", 0) == 10
    assert tracker.rate_cap("vision/bob") == ("vision", 5)
    first = tracker.charge("vision/alice", 2.5, 0.1, now_s=10)
    assert [(a.scope, a.threshold) for a in first] == [("user", 0.5)]
    assert tracker.charge("vision/alice", 0.1, 0.0, now_s=20) == []  # already raised
    crossed = tracker.charge("vision/alice", 3.0, 0.0, now_s=30)
    assert {(a.scope, a.metric, a.threshold) for a in crossed} == {
        ("team", "usd", 0.5), ("user", "usd", 1.0)}
    assert tracker.headroom("vision/alice", "usd", 40) == pytest.approx(4 - 5.6)
    assert tracker.headroom("vision/alice", "usd", 86400 + 1) == 4  # a new period


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[teams.vision]\nusd_per_month = -1\n", "teams.vision.usd_per_month"),
        ("[teams.vision]\nusd_per_moth = 1\n", "teams.vision"),
        ("[users.alice]\nusd_per_month = 1\n", "users.alice"),
        ("webhook = 'ftp://x'\n", "webhook"),
    ],
)
def test_bad_budget_files_name_the_entry(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "b.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=fragment.replace(".", r"\.")):
        load_budgets(path)


def test_alerts_are_posted_to_a_webhook_and_failures_only_logged(caplog) -> None:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API
            size = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(size)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracker = SpendTracker(BudgetBook({("team", "t"): _budget()}, thresholds=(0.5,)))
        alerts = tracker.charge("t/u", 6.0, 0.0, now_s=5)
        sink = WebhookSink(f"http://127.0.0.1:{server.server_port}/hook")
        for alert in alerts:
            sink(alert)
        sink.flush(5)
    finally:
        server.shutdown()
    assert len(received) == 1
    assert received[0]["name"] == "t" and received[0]["threshold"] == 0.5
    assert "6.00 of 10.00 USD" in received[0]["message"]
    # a dead endpoint: logged, not raised
    dead = WebhookSink(f"http://127.0.0.1:{server.server_port}/hook", timeout_s=1)
    with caplog.at_level(logging.WARNING, logger="thrifty.accounting"):
        dead(alerts[0])
        dead.flush(5)
    assert any("webhook" in r.message and "failed" in r.message for r in caplog.records)


def _budget():
    from thrifty.accounting.budgets import Budget

    return Budget("team", "t", usd_per_month=10)

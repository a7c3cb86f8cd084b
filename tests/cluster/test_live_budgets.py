"""Budgets on a live control plane: a team that runs out of money has its job stopped through
its checkpoint at the cap, another team's job is unaffected, and each alert goes out once, even
across a scheduler restart."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sqlalchemy import select
from waiting import wait_for_state

from thrifty.accounting.budgets import load_budgets
from thrifty.accounting.ledger import report
from thrifty.cluster.budgets import ALERT_EVENT, LiveBudgets
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import Event
from thrifty.cluster.spec import validate_spec
from thrifty.cluster.store import Store
from thrifty.cluster.usage import live_ledger, live_tariff

USD_PER_CORE_HOUR = 36.0  # a cent a second, so that a few seconds exhaust a budget
CAP_USD = 0.04
INTERVAL_S = 0.5

# Works until told to stop; on SIGTERM it "checkpoints" (writes a file) and exits with 75, the
# code that means "resize me", as thrifty.train does.
WORKER = """
import os, signal, sys, time
def stop(*_):
    open(os.environ["MARKER"], "w").write("checkpointed")
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    time.sleep(0.05)
"""


def _spec(name: str, team: str, seconds: float, marker: Path) -> dict:
    return {"name": name, "mode": "rigid", "team": team,
            "entrypoint": {"command": [sys.executable, "-c", WORKER, str(seconds)]},
            "env": {"MARKER": str(marker)}, "resources": {"max_replicas": 1}}


def test_a_team_over_budget_is_stopped_at_the_cap_and_others_go_on(tmp_path: Path) -> None:
    sheet = tmp_path / "prices.toml"
    sheet.write_text(f"[onprem.cpu]\nusd_per_cpu_hour = {USD_PER_CORE_HOUR}\nwatts = 10\n")
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("alert_thresholds = [0.5, 0.8]\n"
                       f"[teams.vision]\nusd_per_month = {CAP_USD}\n")
    tariff, book = live_tariff(sheet, "300"), load_budgets(budgets)
    store = Store(f"sqlite:///{tmp_path / 'thrifty.db'}")
    # Its jobs write their files beside the home, outside any sandbox.
    plane = ControlPlane(store, LocalExecutor(slots=2, isolation="none"), "thrifty",
                         interval_s=INTERVAL_S, home=tmp_path, stop_grace_s=10.0, tariff=tariff,
                         budgets=book)
    plane.start()
    try:
        capped = plane.submit(validate_spec(
            _spec("capped", "vision", 60, tmp_path / "capped.txt"), owner="alice")).id
        free = plane.submit(validate_spec(
            _spec("free", "nlp", 8, tmp_path / "free.txt"), owner="bob")).id
        wait_for_state(store, capped, ("running",))
        # The budget lasts CAP_USD / (USD_PER_CORE_HOUR / 3600) = 4 s of one core.
        wait_for_state(store, capped, ("queued",), timeout_s=30)
        wait_for_state(store, free, ("succeeded",), timeout_s=30)
        time.sleep(3 * INTERVAL_S)  # more rounds: the job must stay stopped, alerts not repeat
        assert store.get(capped).state == "queued"
    finally:
        plane.stop(stop_jobs=True)

    # Stopped through its checkpoint, with the reason on record.
    assert (tmp_path / "capped.txt").read_text() == "checkpointed"
    kinds = [e.kind for e in store.events(capped, limit=100)]
    assert "over-budget" in kinds and "preempted" in kinds and "failed" not in kinds
    assert not (tmp_path / "free.txt").exists()  # the other team ran to its end

    teams = {r.key: r for r in report(live_ledger(store, tariff, time.time()), "team")}
    one_interval = USD_PER_CORE_HOUR / 3600 * INTERVAL_S
    assert CAP_USD - one_interval <= teams["vision"].usd <= CAP_USD + one_interval
    assert teams["nlp"].usd > 0.05  # ran 8 s at a cent a second: no cap held it back

    def alerts() -> list[str]:
        with store.session() as s:
            return list(s.scalars(select(Event.message).where(Event.kind == ALERT_EVENT)))

    sent = alerts()
    assert len(sent) == 2 and all("team vision" in m for m in sent)
    # A restarted scheduler prices the same history and keeps the same caps, silently.
    again = LiveBudgets(book, tariff, INTERVAL_S, sinks=[])
    spend, due = again.spend(store, [], time.time())
    assert spend.spent("team", "vision", "usd", time.time()) == teams["vision"].usd
    again._alert(store, due, time.time())
    assert alerts() == sent
    store.close()

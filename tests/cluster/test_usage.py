"""Usage of the control plane's jobs, priced: the store's allocation history becomes a ledger
with money, energy (measured where a job measured it) and CO2, and `thrifty report` shows it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from thrifty.accounting.ledger import report
from thrifty.cluster.schema import AllocationRow, JobRow
from thrifty.cluster.spec import validate_spec
from thrifty.cluster.store import Store
from thrifty.cluster.usage import live_ledger, live_tariff, unpriced
from thrifty.contract import JobReport
from thrifty.errors import InputError, ThriftyError
from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.base import NodeView
from thrifty.settings import Settings

SHEET = """
name = "lab"
pue = 1.5
[onprem.cpu]
usd_per_cpu_hour = 0.10
watts = 10
"""


def _job(store: Store, owner: str, team: str, at: float) -> str:
    spec = validate_spec({"name": "work", "mode": "rigid", "team": team,
                          "entrypoint": {"command": [sys.executable, "-c", "pass"]}}, owner=owner)
    return store.submit(spec, now=at).id


def _held(store: Store, job_id: str, slots: int, start: float, end: float | None) -> None:
    with store.session() as s:
        s.add(AllocationRow(job_id=job_id, allocation={"kind": "cpu", "gpus": {"here": slots}},
                            start=start, end=end))


MODEL = GoodputModel({"cpu": ThroughputParams(3.5e-3, 3e-6, 1e-8, 1e-8, 1e-8, 1e-8, 1.0)},
                     GradientStats(sqr=4e-4, var=5e-3), BatchLimits(init_batch_size=32,
                                                                    max_batch_size=512))


def _reported(store: Store, job_id: str, report_: dict) -> None:
    """Store a report as a job publishes it: a JobReport with these fields over a model."""
    with store.session() as s:
        s.get(JobRow, job_id).report = JobReport(model=MODEL, job_id=job_id,
                                                 **report_).to_dict()


def test_allocations_are_billed_by_owner_with_measured_energy_and_restart_overhead(
    tmp_path: Path,
) -> None:
    sheet = tmp_path / "lab.toml"
    sheet.write_text(SHEET)
    tariff = live_tariff(sheet, "400")
    store = Store(f"sqlite:///{tmp_path / 'thrifty.db'}")
    t0 = 1_800_000_000.0
    alice = _job(store, "alice", "vision", t0 - 600)  # queued ten minutes
    bob = _job(store, "bob", "nlp", t0)
    _held(store, alice, 2, t0, t0 + 1800)
    _held(store, alice, 1, t0 + 1800, None)  # still running: cut at `now`
    _held(store, bob, 1, t0, t0 + 3600)
    _reported(store, alice, {"startup_s": 60.0, "energy_kwh": None})
    _reported(store, bob, {"startup_s": 10.0, "energy_kwh": 0.5})
    nodes = [NodeView("here", "cpu", 4)]

    ledger = live_ledger(store, tariff, t0 + 3600, nodes)
    entries = {e.job: e for e in ledger.entries}
    a, b = entries[alice], entries[bob]
    assert (a.team, a.user, b.team, b.user) == ("vision", "alice", "nlp", "bob")
    assert a.gpu_hours == pytest.approx(2 * 0.5 + 1 * 0.5)
    assert a.usd == pytest.approx(1.5 * 0.10)
    assert a.queue_s == pytest.approx(600)
    # 60 s of start-up over two attempts: 30 s on 2 cores, then 30 s on 1.
    assert a.restart_gpu_hours == pytest.approx((30 * 2 + 30 * 1) / 3600)
    # Nothing measured alice's energy: 1.5 core-hours at 10 W, PUE 1.5.
    assert (a.energy_source, a.kwh) == ("modelled", pytest.approx(1.5 * 10 * 1.5 / 1000))
    assert (b.energy_source, b.kwh) == ("measured", 0.5)
    assert b.kgco2e == pytest.approx(0.5 * 400 / 1000)
    teams = {r.key: r for r in report(ledger, "team")}
    assert teams["vision"].usd == pytest.approx(0.15) and teams["nlp"].usd == pytest.approx(0.1)
    # With `since`, only the second half hour counts: alice's one core and bob's.
    late = {r.key: r for r in report(ledger, "team", since_s=t0 + 1800)}
    assert late["vision"].gpu_hours == pytest.approx(0.5)

    only_bob = live_ledger(store, tariff, t0 + 3600, nodes, owner="bob")
    assert [e.job for e in only_bob.entries] == [bob]
    store.close()


def test_unpriced_kinds_and_bad_watts_are_named(tmp_path: Path) -> None:
    tariff = live_tariff(None, "DEU")
    assert unpriced(tariff, [NodeView("here", "cpu", 2)]) == []
    problems = unpriced(tariff, [NodeView("box", "h100x", 8)])
    assert len(problems) == 1 and "node box" in problems[0] and "h100x" in problems[0]
    sheet = tmp_path / "bad.toml"
    sheet.write_text("[onprem.cpu]\nusd_per_cpu_hour = 0.1\nwatts = -5\n")
    with pytest.raises(InputError, match=r"onprem\.cpu\.watts"):
        live_tariff(sheet, "DEU")


def test_country_intensities_come_from_codecarbon_and_a_series_is_refused() -> None:
    germany, france = live_tariff(None, "DEU").intensity, live_tariff(None, "FRA").intensity
    assert "Germany" in germany.name and "CodeCarbon" in germany.name
    # France's grid is mostly nuclear: several times cleaner than Germany's.
    assert 0 < france.mean_g_per_kwh(0, 1) < germany.mean_g_per_kwh(0, 1) / 3
    with pytest.raises(ThriftyError, match="unknown country code 'XYZ'"):
        live_tariff(None, "XYZ")
    data = Settings.from_env().require_data()
    series = sorted((data / "carbon").glob("*.csv"))[0]
    with pytest.raises(ThriftyError, match="time series"):
        live_tariff(None, str(series))

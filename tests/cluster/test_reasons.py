"""Every waiting or failed job says why: through the API's job detail and `thrifty job`, against a
real API server on loopback, a real control plane and the local executor. Jobs run until a stop
file the test creates appears, so the test, not the machine, decides when the cluster frees up."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from waiting import wait_for_state, wait_until

from thrifty.cli import app
from thrifty.cluster.api import ApiServer, create_app
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.store import Store

PY = sys.executable
WAIT_FOR_FILE = ("import pathlib, sys, time\n"
                 "while not pathlib.Path(sys.argv[1]).exists():\n"
                 "    time.sleep(0.05)\n")


class Served:
    def __init__(self, home: Path, **plane: Any) -> None:
        self.home = home
        self.store = Store(f"sqlite:///{home / 'thrifty.db'}")
        # Its jobs wait for files the test writes in the home, which a sandbox hides: the
        # sandbox has tests of its own (test_isolation.py).
        self.executor = LocalExecutor(slots=2, isolation="none")
        self.plane = ControlPlane(self.store, self.executor, "thrifty", interval_s=0.2,
                                  home=home, stop_grace_s=5.0, **plane)
        self.token = self.store.add_user("admin", admin=True)
        (home / "token").write_text(self.token + "\n")
        self.api = ApiServer(create_app(self.plane))
        node = self.executor.nodes()[0]
        self.kind, self.capacity = node.gpu_kind, node.num_gpus
        self.noun = "cpu slots" if self.kind == "cpu" else f"{self.kind} GPUs"

    def submit(self, name: str, code: str, *args: str, replicas: int = 1,
               **fields: Any) -> str:
        spec = {"name": name, "mode": "rigid", "working_dir": str(self.home),
                "entrypoint": {"command": [PY, "-c", code, *args]},
                "resources": {"max_replicas": replicas}, "max_restarts": 0, **fields}
        response = httpx.post(f"{self.api.url}/jobs", json=spec, headers=self._auth(),
                              trust_env=False)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def detail(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.api.url}/jobs/{job_id}", headers=self._auth(),
                             trust_env=False)
        assert response.status_code == 200, response.text
        return response.json()

    def job_command(self, job_id: str) -> str:
        result = CliRunner().invoke(app, ["job", job_id], env={"THRIFTY_SERVER": self.api.url},
                                    catch_exceptions=False)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result.stdout

    def reason_of(self, job_id: str, starts: str) -> dict[str, Any] | None:
        job = self.detail(job_id)
        return job if job["reason"].startswith(starts) else None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    monkeypatch.delenv("THRIFTY_TOKEN", raising=False)
    made: list[Served] = []

    def start(**plane: Any) -> Served:
        s = Served(tmp_path, **plane)
        s.plane.start()
        s.api.start()
        made.append(s)
        return s

    yield start
    for s in made:
        s.api.stop()
        s.plane.stop(stop_jobs=True)
        s.store.close()


def test_a_job_behind_a_full_cluster_says_so_until_it_starts(make: Any, tmp_path: Path) -> None:
    served = make()
    first_stop, second_stop = tmp_path / "stop-first", tmp_path / "stop-second"
    first = served.submit("first", WAIT_FOR_FILE, str(first_stop), replicas=served.capacity)
    wait_for_state(served.store, first, ("running",))
    second = served.submit("second", WAIT_FOR_FILE, str(second_stop))

    full = f"waiting: all {served.capacity} {served.noun} are in use by 1 job"
    job = wait_until(lambda: served.reason_of(second, full), "the full cluster as the reason")
    assert job["state"] == "queued" and job["reason"] == full
    assert job["last_decision"] == {"proposed": None, "granted": None}
    assert [e["message"] for e in job["events"] if e["kind"] == "waiting"] == [full]
    assert job["log_tail"] is None
    holder = served.detail(first)
    assert holder["reason"] == f"running: attempt 1 on {served.capacity} {served.noun}"
    assert holder["last_decision"]["granted"]["gpus"] == {"local": served.capacity}

    # Rounds that change nothing write nothing: no second event, the same reason.
    rounds = served.plane.rounds
    wait_until(lambda: served.plane.rounds >= rounds + 3, "three more rounds")
    again = served.detail(second)
    assert [e for e in again["events"] if e["kind"] == "waiting"] == \
        [e for e in job["events"] if e["kind"] == "waiting"]

    shown = served.job_command(second)
    assert f"reason: {full}" in shown
    assert f"never started: {full}" in shown
    assert "last decision: granted nothing" in shown

    first_stop.touch()
    started = wait_until(lambda: served.reason_of(second, "running: attempt 1 on 1 "),
                         "the second job's start as its reason")
    assert started["state"] == "running"
    assert started["last_decision"]["granted"]["gpus"] == {"local": 1}
    second_stop.touch()
    wait_for_state(served.store, second, ("succeeded",))
    assert served.detail(second)["reason"].startswith("succeeded")


def test_a_failed_job_shows_why_and_its_log_tail(make: Any) -> None:
    served = make()
    job_id = served.submit("broken", "print('a line before the end'); "
                                     "raise SystemExit('boom: the input is missing')")
    wait_for_state(served.store, job_id, ("failed",))
    job = served.detail(job_id)
    assert job["reason"] == "failed: exit code(s) 1, 1 time(s); no retries left (max_restarts=0)"
    assert "a line before the end" in job["log_tail"]
    assert "boom: the input is missing" in job["log_tail"]
    assert job["message"].startswith("failed 1 time(s)")  # kept as before

    shown = served.job_command(job_id)
    assert f"reason: {job['reason']}" in shown
    assert "boom: the input is missing" in shown
    assert "never started" not in shown


def test_a_job_in_retry_back_off_says_when_it_retries(make: Any) -> None:
    served = make(retry_backoff_s=600.0)
    job_id = served.submit("flaky", "raise SystemExit(3)", max_restarts=2)
    job = wait_until(lambda: served.reason_of(job_id, "retrying"), "a retry as the reason")
    assert job["state"] == "queued"
    assert job["reason"] == "retrying after exit code(s) 3 in 600 s (retry 1 of 2)"
    assert job["log_tail"] is None  # not failed for good


def test_a_job_over_its_teams_quota_names_the_quota(make: Any, tmp_path: Path) -> None:
    served = make(quotas={"vision": {"cpu": 1, "gpu": 1}})
    if served.capacity < 2:
        pytest.skip("needs two slots")
    job_id = served.submit("wide", WAIT_FOR_FILE, str(tmp_path / "never"), replicas=2,
                           team="vision")
    job = wait_until(lambda: served.reason_of(job_id, "waiting: quota"), "the quota as reason")
    assert job["reason"] == (f"waiting: quota of team vision allows 1 {served.noun[:-1]}; its "
                             "jobs hold 0 and this one needs 2")
    assert job["last_decision"]["proposed"]["gpus"] == {"local": 2}
    assert job["last_decision"]["granted"] is None
    shown = served.job_command(job_id)
    assert "the policy proposed 2 ×" in shown and "granted nothing" in shown


def test_each_stage_that_holds_a_job_back_is_named() -> None:
    """Budgets, a greener start and a lost kind, from what each stage of a round granted."""
    from thrifty.cluster.deciding import RoundDecision
    from thrifty.cluster.reasons import HELD_REASON, waiting_reason
    from thrifty.cluster.schema import JobRow
    from thrifty.cluster.spec import validate_spec
    from thrifty.contract import Allocation
    from thrifty.policy.base import ClusterView, NodeView

    job = JobRow(id="j", team="nlp", owner="ada", state="queued", retry_at=None)
    spec = validate_spec({"name": "j", "entrypoint": {"script": "x.py"},
                          "resources": {"gpu_kinds": ["a100"]}})
    cluster = ClusterView((NodeView("n1", "a100", 4),))
    two = Allocation({"n1": 2}, "a100")

    def why(decision: RoundDecision, on: ClusterView = cluster) -> str | None:
        return waiting_reason(job, spec, decision, on, {}, {"j": "nlp"}, now=100.0)

    assert why(RoundDecision({"j": two}, {"j": two}, {})) == (
        "waiting: over budget: nlp/ada cannot afford it for the next interval; it starts when "
        "the budget has room")
    assert why(RoundDecision(held=frozenset({"j"}))) == HELD_REASON
    assert why(RoundDecision(), ClusterView((NodeView("n2", "t4", 4),))) == \
        "waiting: no node of kind a100 is up"
    full = {"k": Allocation({"n1": 3}, "a100"), "m": Allocation({"n1": 1}, "a100")}
    assert why(RoundDecision(full, full, full)) == "waiting: all 4 a100 GPUs are in use by 2 jobs"
    some = {"k": Allocation({"n1": 3}, "a100")}
    assert why(RoundDecision(some, some, some)) == \
        "waiting: the policy ranked other jobs first this round"
    job.retry_at = 160.0
    assert why(RoundDecision()) is None  # a back-off keeps the reason its failure gave

"""`thrifty server` killed with SIGKILL mid-run and started again: what ran is adopted, what
ended meanwhile is settled from its exit status, what waited still waits, and every job ends as it
would have without the crash.

Two CPU slots: a real adaptive training job (digits MLP, one replica) and a rigid job that waits
for a flag file each hold one; a rigid job that needs both slots waits in the queue. The server
dies with all three in flight; while it is down the flag job finishes. After the restart the
training job must be re-adopted (not restarted), the flag job must be recorded as succeeded from
its exit status (not run again), the queued job must still be there, and all must succeed.

The training job trains until the test creates its stop file, after the restart has been checked:
sized in epochs, it could end before the kill on a fast enough machine.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import PY, Server
from waiting import until_stopped

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, isolation="none")  # its jobs wait for files in the home
    srv.start()
    yield srv
    srv.close()


def _wait(http: httpx.Client, job_id: str, ok: Any, what: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}").json()
        if ok(job):
            return job
        time.sleep(0.25)
    raise AssertionError(f"{job_id}: {what} not seen in {timeout_s} s: {job}")


def test_sigkilled_server_adopts_running_jobs_and_loses_nothing(server: Server) -> None:
    token = (server.home / "token").read_text().strip()
    assert (server.home / "token").stat().st_mode & 0o777 == 0o600
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                        timeout=30)
    stop = server.home / "stop"
    training = http.post("/jobs", json={
        "name": "digits", "entrypoint": until_stopped(stop),
        "working_dir": str(EXAMPLES), "resources": {"min_replicas": 1, "max_replicas": 1},
    }).json()["id"]
    _wait(http, training, lambda j: j["state"] == "running" and (j["epoch"] or 0) >= 1,
          "training under way", 90)
    flag = server.home / "flag"
    waiter = (f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
              "print('done')")
    sleeper = http.post("/jobs", json={
        "name": "flagged", "mode": "rigid", "entrypoint": {"command": [PY, "-c", waiter]},
    }).json()["id"]
    _wait(http, sleeper, lambda j: j["state"] == "running", "flag job running", 30)
    wide = http.post("/jobs", json={
        "name": "wide", "mode": "rigid", "resources": {"max_replicas": 2},
        "entrypoint": {"command": [PY, "-c", "print('both slots')"]},
    }).json()["id"]
    time.sleep(1.5)  # a few rounds: it must still wait for the flag job's slot
    states = {j["id"]: j["state"] for j in http.get("/jobs").json()["jobs"]}
    assert states == {training: "running", sleeper: "running", wide: "queued"}
    before = http.get(f"/jobs/{training}").json()

    server.kill(signal.SIGKILL)
    with pytest.raises(httpx.ConnectError):
        http.get("/healthz")
    flag.touch()  # the flag job ends while no control plane watches it
    exit_file = server.home / "jobs" / sleeper / "logs" / ".attempt-1-rank-0.exit"
    deadline = time.monotonic() + 30
    while not exit_file.is_file():
        assert time.monotonic() < deadline, "the flag job did not end"
        time.sleep(0.05)
    server.start()

    # The loop runs at once: the wide job may already have preempted training (a checkpoint-
    # restart), but first the running attempt must have been adopted, not declared lost.
    after = http.get(f"/jobs/{training}").json()
    new_events = after["events"][len(before["events"]):]
    assert new_events and new_events[0]["kind"] == "adopted", after["events"]
    number = len(before["attempts"])
    assert new_events[0]["message"] == f"attempt {number} re-adopted after restart"
    assert after["attempts"][number - 1]["outcome"] in (None, "stopped"), after["attempts"]
    flagged = http.get(f"/jobs/{sleeper}").json()
    assert flagged["state"] == "succeeded", flagged["events"]
    assert [a["outcome"] for a in flagged["attempts"]] == ["succeeded"]  # not run twice
    assert http.get(f"/jobs/{wide}").json()["state"] in ("queued", "running", "succeeded")

    stop.touch()  # the restart is checked: training may end now
    for job_id in (sleeper, wide, training):
        _wait(http, job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
              "the end", 180)
    jobs = http.get("/jobs", params={"state": "succeeded,failed,cancelled"}).json()
    assert jobs["total"] == 3
    assert {j["id"]: j["state"] for j in jobs["jobs"]} == dict.fromkeys(
        (training, sleeper, wide), "succeeded"), server.output()
    final = http.get(f"/jobs/{training}").json()
    # The adopted attempt kept training; if the wide job preempted it afterwards, the next
    # attempt resumed from its checkpoint rather than from epoch 0.
    logs = http.get(f"/jobs/{training}/logs").json()
    stopped_at = int(re.search(r"stopped at epoch (\d+)", logs["ranks"][0]["text"]).group(1))
    assert final["epoch"] == stopped_at  # the last report, written when training ends
    assert stopped_at > (before["epoch"] or 0)  # it trained on after the crash
    assert f"epoch {stopped_at - 1}:" in logs["ranks"][0]["text"]
    if len(final["attempts"]) > 1:
        assert "epoch 0:" not in logs["ranks"][0]["text"]
    assert "both slots" in http.get(f"/jobs/{wide}/logs").json()["ranks"][0]["text"]

    server.kill(signal.SIGTERM)
    assert server.proc is not None and server.proc.returncode == 0, server.output()
    assert "running jobs go on" in server.output()

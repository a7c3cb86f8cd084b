"""The scheduling loop on the local executor, with real processes and real training.

Jobs that a test needs alive through an event (a resize, a quota's wait, a restart of the plane)
run until the test creates a file, never for a fixed time or number of epochs: a faster or
slower machine then changes how long the test takes, not what it sees.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import until_stopped, wait_for_state, wait_until

from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.spec import validate_spec
from thrifty.cluster.states import TERMINAL_STATES
from thrifty.cluster.store import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def executor(slots: int) -> LocalExecutor:
    """The jobs here wait for files the tests create beside the home, which a sandbox hides
    (tests/cluster/test_isolation.py runs jobs in one): they run with isolation `none`."""
    return LocalExecutor(slots=slots, isolation="none")


def spec(name: str, **fields: object) -> object:
    return validate_spec({"name": name, "working_dir": str(EXAMPLES), **fields})


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(Store(f"sqlite:///{tmp_path / 'db'}"), executor(2), "thrifty",
                      interval_s=1.0, home=tmp_path, stop_grace_s=20.0, retry_backoff_s=0.2,
                      restart_s=1.0)
    cp.start()
    yield cp
    cp.stop(stop_jobs=True)


def kinds(plane: ControlPlane, job_id: str) -> list[str]:
    return [e.kind for e in plane.store.events(job_id)]


def until_file(flag: Path) -> list[str]:
    """A rigid job's command: wait until `flag` exists, then say done."""
    return ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.05; done; echo done', "sh", str(flag)]


def newest_attempt(logs: Path) -> int:
    return max(int(p.name.split("-")[1]) for p in logs.glob("attempt-*-rank-0.log"))


def test_a_crashing_job_is_retried_then_failed_with_its_log_tail(plane: ControlPlane) -> None:
    crash = "import sys; print('loading shard 7', flush=True); sys.exit(3)"
    job = plane.submit(spec("crash", mode="rigid", max_restarts=2,
                            entrypoint={"command": [sys.executable, "-c", crash]}))
    assert wait_for_state(plane.store, job.id, TERMINAL_STATES, 60).state == "failed"
    row = plane.store.get(job.id)
    assert row.failures == 3  # the first run and two retries
    assert "exit codes 3" in row.message and "loading shard 7" in row.message
    assert kinds(plane, job.id).count("started") == 3


def test_an_adaptive_job_grows_by_checkpoint_restart_and_resumes(
    plane: ControlPlane, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    job = plane.submit(spec("grow", entrypoint=until_stopped(stop),
                            resources={"max_replicas": 2}))
    logs = plane.scheduler.log_dir(job.id)

    def grown_and_training() -> bool:
        row = plane.store.get(job.id)
        assert row.state not in TERMINAL_STATES, (row.state, plane.store.events(job.id))
        second = logs / "attempt-2-rank-0.log"
        return ((logs / "attempt-2-rank-1.log").exists() and second.is_file()
                and re.search(r"epoch \d+:", second.read_text()) is not None)

    # The job trains until `stop` exists: it is still training when it grows, at any speed.
    wait_until(grown_and_training, "a second attempt training on two replicas", 400)
    stop.touch()
    assert wait_for_state(plane.store, job.id, TERMINAL_STATES, 120).state == "succeeded"
    row = plane.store.get(job.id)
    assert "resizing" in kinds(plane, job.id) and row.restarts >= 1
    second = (logs / "attempt-2-rank-0.log").read_text()
    assert (logs / "attempt-2-rank-1.log").exists()  # grown to two replicas
    first_epoch = int(re.search(r"epoch (\d+):", second).group(1))
    assert first_epoch > 0  # resumed from the checkpoint, not from the start
    last = (logs / f"attempt-{newest_attempt(logs)}-rank-0.log").read_text()
    stopped_at = int(re.search(r"stopped at epoch (\d+)", last).group(1))
    assert stopped_at > first_epoch
    # the last report is the one written when training ended
    assert row.report is not None and row.report["epoch"] == stopped_at


def test_cancel_stops_the_replicas(plane: ControlPlane) -> None:
    job = plane.submit(spec("sleepy", mode="rigid",
                            entrypoint={"command": ["sleep", "300"]}))
    wait_for_state(plane.store, job.id, ("running",), 30)

    def pids() -> list[int]:  # the handle is recorded just after the job is marked running
        with plane.store.session() as s:
            return plane.scheduler._open_attempt(s, job.id).handle.get("pids", [])

    pid = wait_until(pids, "the replica's handle on record", 30)[0]
    plane.cancel(job.id)
    assert wait_for_state(plane.store, job.id, TERMINAL_STATES, 30).state == "cancelled"
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_quota_and_non_preemptible_rigid_jobs(tmp_path: Path) -> None:
    cp = ControlPlane(Store(f"sqlite:///{tmp_path / 'db'}"), executor(2), "thrifty",
                      interval_s=0.5, home=tmp_path, quotas={"small": {"cpu": 1}})
    try:
        flag = tmp_path / "flag"
        first = cp.submit(spec("a", mode="rigid", team="small", preemptible=False,
                               entrypoint={"command": until_file(flag)}))
        second = cp.submit(spec("b", mode="rigid", team="small",
                                entrypoint={"command": ["sleep", "1"]}))
        cp.start()
        wait_for_state(cp.store, first.id, ("running",), 20)
        time.sleep(1.5)
        assert cp.store.get(second.id).state == "queued"  # quota 1: it waits for the first
        flag.touch()
        assert wait_for_state(cp.store, second.id, TERMINAL_STATES, 30).state == "succeeded"
        a, b = cp.store.get(first.id), cp.store.get(second.id)
        assert b.started_at >= a.finished_at and a.restarts == 0
    finally:
        cp.stop(stop_jobs=True)


def test_a_restarted_control_plane_adopts_running_replicas(tmp_path: Path) -> None:
    def make() -> ControlPlane:
        return ControlPlane(Store(f"sqlite:///{tmp_path / 'db'}"), executor(1),
                            "thrifty", interval_s=0.5, home=tmp_path)

    first = make()
    first.start()
    flag = tmp_path / "flag"
    job = first.submit(spec("long", mode="rigid", entrypoint={"command": until_file(flag)}))
    wait_for_state(first.store, job.id, ("running",), 20)
    first.stop()  # the loop ends; the replica keeps running
    second = make()
    second.start()
    try:
        assert "adopted" in kinds(second, job.id)
        flag.touch()  # the adopted replica ends now, watched by the second plane
        assert wait_for_state(second.store, job.id, TERMINAL_STATES, 30).state == "succeeded"
        assert kinds(second, job.id).count("started") == 1  # never relaunched
    finally:
        second.stop(stop_jobs=True)

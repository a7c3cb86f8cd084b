"""What a job may read: not the server's token, database or other users' jobs, whatever its owner
writes in its command. Real jobs through a real control plane and API on loopback, opened as
`thrifty server` opens them (`open_server`), in the default isolation (a bubblewrap sandbox).

The server runs here with HOME set to a temporary folder and its state in HOME/.thrifty, as a
deployed server would, and with THRIFTY_TOKEN and THRIFTY_DB_URL in its environment: a job that
read its HOME, its environment or the state folder by absolute path would find the admin token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import PY
from waiting import UNTIL_STOPPED, wait_for_state, wait_until

from thrifty.cluster.api import ApiServer, create_app
from thrifty.cluster.api.server import ServedPlane, describe, open_server
from thrifty.cluster.local import free_port
from thrifty.cluster.states import TERMINAL_STATES
from thrifty.settings import Settings

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="needs bubblewrap (apt-get install bubblewrap)")


@dataclass
class Cluster:
    served: ServedPlane
    api: ApiServer
    home: Path
    work: Path  # a working_dir of the users' own, which jobs see read-only
    admin: str

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})

    def user(self, name: str) -> httpx.Client:
        with self.client(self.admin) as admin:
            answer = admin.post("/users", json={"name": name})
        assert answer.status_code == 201, answer.text
        return self.client(answer.json()["token"])

    def run(self, http: httpx.Client, spec: dict[str, Any]) -> tuple[str, str]:
        """Submit, wait for the end, and return the job's id and its rank 0 log."""
        answer = http.post("/jobs", json={"working_dir": str(self.work), **spec})
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
        row = wait_for_state(self.served.store, job_id, TERMINAL_STATES, 60)
        logs = http.get(f"/jobs/{job_id}/logs").json()
        assert row.state == "succeeded", (row.message, logs)
        return job_id, logs["ranks"][0]["text"]


def shell(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "mode": "rigid", "max_restarts": 0,
            "entrypoint": {"command": ["sh", "-c", script]}}


def open_cluster(base: Path, monkeypatch: pytest.MonkeyPatch,
                 isolation: str | None = None) -> Iterator[Cluster]:
    user_home = base / "user"
    home, work = user_home / ".thrifty", base / "work"
    work.mkdir(parents=True)
    db = home / "thrifty.db"
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("THRIFTY_HOME", str(home))
    monkeypatch.setenv("THRIFTY_DB_URL", f"sqlite:///{db}")
    settings = Settings(home=home, db_url=f"sqlite:///{db}")
    with open_server(settings, "127.0.0.1", free_port(), "local", "thrifty", 0.3, slots=2,
                     isolation=isolation) as served:
        admin = (home / "token").read_text().strip()
        monkeypatch.setenv("THRIFTY_TOKEN", admin)  # as an operator's shell would have it
        served.plane.start()
        try:
            with ApiServer(create_app(served.plane)) as api:
                yield Cluster(served, api, home, work, admin)
        finally:
            served.plane.stop(stop_jobs=True)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    yield from open_cluster(tmp_path, monkeypatch)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_folder_and_its_secrets_are_the_servers_alone(cluster: Cluster) -> None:
    assert mode(cluster.home) == 0o700
    assert mode(cluster.home / "token") == 0o600
    assert mode(cluster.home / "thrifty.db") == 0o600
    assert "jobs isolated: sandbox" in describe(cluster.served, "thrifty", 0.3)


def test_an_older_looser_home_is_tightened_and_the_log_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "user" / ".thrifty"
    home.mkdir(parents=True, mode=0o755)
    home.chmod(0o755)
    for name in ("token", "thrifty.db"):
        (home / name).touch()
        (home / name).chmod(0o644)
    (home / "token").write_text("old\n")
    with caplog.at_level(logging.WARNING):
        opened = open_cluster(tmp_path, monkeypatch)
        next(opened)
        opened.close()
    assert (mode(home), mode(home / "token"), mode(home / "thrifty.db")) == (0o700, 0o600, 0o600)
    warned = [r.getMessage() for r in caplog.records if "readable by other OS users" in r.message]
    assert len(warned) == 3, warned


def test_a_job_cannot_read_the_token_the_database_or_the_servers_environment(
    cluster: Cluster,
) -> None:
    home = cluster.home
    thief = (f'cat "$HOME/.thrifty/token"; cat {home}/token; head -c 64 {home}/thrifty.db; '
             'ls ~/.thrifty; echo "home is $HOME"; env | sort | sed "s/^/env: /"')
    job_id, log = cluster.run(cluster.user("mallory"), shell("thief", thief))
    assert cluster.admin not in log
    assert "SQLite format" not in log
    assert log.count("No such file or directory") >= 3, log
    assert f"home is {home}/jobs/{job_id}/home" in log  # a scratch HOME of its own
    seen = dict(line.removeprefix("env: ").split("=", 1) for line in log.splitlines()
                if line.startswith("env: ") and "=" in line)
    for name in ("THRIFTY_TOKEN", "THRIFTY_DB_URL", "THRIFTY_HOME"):
        assert name not in seen, log
    assert {"THRIFTY_JOB_ID", "THRIFTY_CHECKPOINT_DIR", "THRIFTY_REPORT",
            "THRIFTY_ALLOCATION"} <= set(seen)
    assert seen["THRIFTY_JOB_ID"] == job_id


def test_one_users_job_cannot_read_anothers_logs_or_checkpoints(cluster: Cluster) -> None:
    alice, bob = cluster.user("alice"), cluster.user("bob")
    writer = ('echo "log secret 4711"; echo "checkpoint secret 0815" > '
              '"$THRIFTY_CHECKPOINT_DIR/state.pt"')
    theirs, log = cluster.run(alice, shell("writer", writer))
    folder = cluster.home / "jobs" / theirs
    logfile = folder / "logs" / "attempt-1-rank-0.log"
    checkpoint = folder / "checkpoints" / "state.pt"
    assert "log secret 4711" in logfile.read_text() and checkpoint.is_file()
    reader = (f"cat {logfile}; cat {checkpoint}; echo forged > {checkpoint}; "
              f'echo "jobs here: $(ls {cluster.home}/jobs)"; echo reader done')
    mine, log = cluster.run(bob, shell("reader", reader))
    assert "reader done" in log
    assert "4711" not in log and "0815" not in log
    assert log.count("No such file or directory") >= 2, log
    assert f"jobs here: {mine}\n" in log  # not even the other job's folder is there
    assert checkpoint.read_text() == "checkpoint secret 0815\n"


def test_a_checkpoint_dir_over_the_state_folder_is_refused(cluster: Cluster) -> None:
    """A spec's checkpoint folder is mounted writable: one holding the state folder would bring
    the token back into view, so the launch fails and says why."""
    http = cluster.user("sly")
    spec = {**shell("sly", 'cat "$THRIFTY_CHECKPOINT_DIR/.thrifty/token"'),
            "working_dir": str(cluster.work), "checkpoint_dir": str(cluster.home.parent)}
    job_id = http.post("/jobs", json=spec).json()["id"]
    row = wait_for_state(cluster.served.store, job_id, TERMINAL_STATES, 60)
    logs = http.get(f"/jobs/{job_id}/logs").json()
    assert cluster.admin not in str(logs)
    assert row.state == "failed" and "checkpoint_dir" in row.message, row.message


def test_adaptive_training_grows_reports_and_checkpoints_in_the_sandbox(
    cluster: Cluster,
) -> None:
    script = shutil.copy(UNTIL_STOPPED, cluster.work)  # the owner's code, in its working_dir
    stop = cluster.work / "stop"
    http = cluster.user("trainer")
    answer = http.post("/jobs", json={
        "name": "digits", "working_dir": str(cluster.work),
        "entrypoint": {"script": str(script), "args": ["--stop-file", str(stop)]},
        "resources": {"max_replicas": 2},
    })
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    folder = cluster.home / "jobs" / job_id
    second = folder / "logs" / "attempt-2-rank-0.log"

    def grown_and_training() -> bool:
        # Growing is a checkpoint-restart: SIGTERM reaches the job through the sandbox, it
        # checkpoints and exits to be resized; two replicas then meet over gloo on 127.0.0.1.
        return ((folder / "logs" / "attempt-2-rank-1.log").is_file() and second.is_file()
                and re.search(r"epoch \d+:", second.read_text()) is not None)

    try:
        wait_until(grown_and_training, "a second attempt training on two replicas", 400)
    except AssertionError as err:
        job, logs = http.get(f"/jobs/{job_id}").json(), http.get(f"/jobs/{job_id}/logs").json()
        raise AssertionError(f"{err}: {job}, {logs}") from None
    assert any((folder / "checkpoints").iterdir())
    stop.touch()
    row = wait_for_state(cluster.served.store, job_id, TERMINAL_STATES, 120)
    text = http.get(f"/jobs/{job_id}/logs").json()["ranks"][0]["text"]
    assert row.state == "succeeded", (row.message, text)
    assert int(re.search(r"epoch (\d+):", second.read_text()).group(1)) > 0  # resumed
    stopped_at = int(re.search(r"stopped at epoch (\d+)", text).group(1))
    assert row.report is not None and row.report["epoch"] == stopped_at


def test_a_stop_ends_the_whole_sandbox(cluster: Cluster) -> None:
    """A job that ignores SIGTERM is killed after the grace, its sandbox (bwrap) with it."""
    http = cluster.user("stubborn")
    answer = http.post("/jobs", json={"working_dir": str(cluster.work), **shell(
        "stubborn", "trap '' TERM; echo ready; while true; do sleep 0.05; done")})
    job_id = answer.json()["id"]
    wait_for_state(cluster.served.store, job_id, ("running",), 30)
    logs = cluster.home / "jobs" / job_id / "logs" / "attempt-1-rank-0.log"
    wait_until(lambda: logs.is_file() and "ready" in logs.read_text(), "the job ready", 30)

    def recorded() -> dict[str, Any]:  # the handle is recorded just after the launch returns
        with cluster.served.store.session() as s:
            found = cluster.served.plane.scheduler._open_attempt(s, job_id).handle
        return found if found.get("pids") else {}

    handle = wait_until(recorded, "the replica's handle on record", 30)
    cluster.served.executor.stop([handle], grace_s=0.5)
    assert not cluster.served.executor.poll(handle).running
    group = handle["pids"][0]

    def gone() -> bool:  # killed processes the machine's init has not reaped yet count as gone
        return not [p for p in os.listdir("/proc") if p.isdigit() and pgid(p) == group
                    and state(p) not in ("Z", None)]

    wait_until(gone, "no process of the sandbox left", 10)


def _stat(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def pgid(pid: str) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def state(pid: str) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def test_without_bwrap_the_server_refuses_unless_none_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = tmp_path / "empty-path"
    nowhere.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("THRIFTY_")},
           "PATH": str(nowhere), "THRIFTY_HOME": str(tmp_path / "h")}
    done = subprocess.run([PY, "-m", "thrifty.cli", "server", "--port", str(free_port())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bwrap" in done.stderr and "apt-get install bubblewrap" in done.stderr
    assert "--isolation none" in done.stderr
    assert not (tmp_path / "h" / "token").exists()  # no half-started server made an admin

    monkeypatch.setenv("PATH", str(nowhere))
    none = open_cluster(tmp_path / "none", monkeypatch, isolation="none")
    cluster = next(none)
    try:
        assert "jobs isolated: none" in describe(cluster.served, "thrifty", 0.3)
        job = ("import os; print('home is', os.environ['HOME']); "
               "print('leaked', sorted(k for k in os.environ if k in "
               "('THRIFTY_TOKEN', 'THRIFTY_DB_URL', 'THRIFTY_HOME')))")
        job_id, log = cluster.run(cluster.user("nobody"), {
            "name": "plain", "mode": "rigid", "max_restarts": 0,
            "entrypoint": {"command": [sys.executable, "-c", job]}})
        assert f"home is {cluster.home}/jobs/{job_id}/home" in log
        assert "leaked []" in log
    finally:
        none.close()


def test_a_ray_replica_gets_the_scrubbed_environment_and_a_home_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper a Ray node runs (here without Ray: the same class, the same process start)."""
    from thrifty.cluster.ray_keeper import PYTHON, Keeper

    for name in ("THRIFTY_TOKEN", "THRIFTY_DB_URL", "THRIFTY_HOME", "CLOUD_SECRET"):
        monkeypatch.setenv(name, "leak-me")
    log = tmp_path / "jobs" / "rayjob" / "logs" / "attempt-1-rank-0.log"
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    keeper = Keeper()
    assert keeper.start([PYTHON, "-c", code], str(tmp_path),
                        {"THRIFTY_JOB_ID": "rayjob", "MY_SETTING": "kept"}, str(log)) > 0
    wait_until(lambda: keeper.status() is not None, "the replica to end", 30)
    assert keeper.status() == 0
    seen = json.loads(log.read_text().strip().splitlines()[-1])
    assert "leak-me" not in seen.values()
    assert seen["THRIFTY_JOB_ID"] == "rayjob" and seen["MY_SETTING"] == "kept"
    assert seen["HOME"] == str(tmp_path / "jobs" / "rayjob" / "home")
    assert seen["PATH"] == os.environ["PATH"]

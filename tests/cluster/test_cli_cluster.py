"""The cluster commands against a real API server (uvicorn on a loopback port, a real control
plane with the local executor): submit, jobs, logs, cancel, cluster, users, and what a user sees
when something is wrong."""

from __future__ import annotations

import json
import math
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from waiting import wait_for_state

from thrifty.cli import app
from thrifty.cluster.api import ApiServer, create_app
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import AllocationRow
from thrifty.cluster.states import TERMINAL_STATES
from thrifty.cluster.store import Store

PY = sys.executable


class Served:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = Store(f"sqlite:///{home / 'thrifty.db'}")
        # The projects its jobs run lie in the home folder, which a sandbox hides.
        self.plane = ControlPlane(self.store, LocalExecutor(slots=2, isolation="none"), "thrifty",
                                  interval_s=0.2, home=home, stop_grace_s=5.0)
        (home / "token").write_text(self.store.add_user("admin", admin=True) + "\n")
        self.api = ApiServer(create_app(self.plane))
        self.url = self.api.url
        self.runner = CliRunner()

    def run(self, *args: str, token: str | None = None, code: int = 0) -> tuple[str, str]:
        extra = ["--token", token] if token else []
        result = self.runner.invoke(app, [*args, *extra], env={"THRIFTY_SERVER": self.url},
                                    catch_exceptions=False)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result.stdout, result.stderr

    def wait(self, job_id: str, states: tuple[str, ...], timeout_s: float = 60) -> str:
        return wait_for_state(self.store, job_id, states, timeout_s).state


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    monkeypatch.delenv("THRIFTY_TOKEN", raising=False)
    monkeypatch.delenv("THRIFTY_SERVER", raising=False)
    s = Served(tmp_path)
    s.plane.start()
    s.api.start()
    yield s
    s.api.stop()
    s.plane.stop(stop_jobs=True)
    s.store.close()


def write_spec(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path


def test_submit_jobs_logs_and_cluster(served: Served, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    # The script is named relative to the spec's folder: working_dir "." must be that folder.
    (project / "work.py").write_text(
        "import os, time\n"
        "for i in range(3):\n"
        "    print(f'step {i} of rank {os.environ[\"RANK\"]}', flush=True)\n"
        "    time.sleep(0.3)\n"
    )
    spec = write_spec(project, "work", f"""
name: work
mode: rigid
working_dir: .
entrypoint:
  command: [{PY}, work.py]
resources:
  max_replicas: 2
""")
    out, err = served.run("submit", str(spec))
    job_id = out.strip()
    assert job_id.startswith("work-") and "submitted work as admin" in err
    row = served.store.get(job_id)
    assert row.spec["working_dir"] == str(project.resolve())

    listed, _ = served.run("jobs", "--all-states")
    assert job_id in listed and "admin" in listed

    followed, done = served.run("logs", "-f", job_id)  # returns once the job has ended
    assert f"{job_id} succeeded" in done
    for rank in (0, 1):
        assert [line for line in followed.splitlines() if line.startswith(f"[rank {rank}]")] == [
            f"[rank {rank}] step {i} of rank {rank}" for i in range(3)]
    assert served.store.get(job_id).state == "succeeded"

    tail, _ = served.run("logs", job_id, "--tail", "1")
    assert tail.splitlines() == ["[rank 0] step 2 of rank 0", "[rank 1] step 2 of rank 1"]

    active, _ = served.run("jobs")
    assert job_id not in active and "no queued or running jobs" in active
    as_json, _ = served.run("jobs", "--all-states", "--json")
    jobs = json.loads(as_json)
    assert [j["id"] for j in jobs] == [job_id] and jobs[0]["state"] == "succeeded"

    cluster, _ = served.run("cluster")
    assert "local" in cluster and "policy thrifty" in cluster and "1 succeeded" in cluster
    info = json.loads(served.run("cluster", "--json")[0])
    assert info["nodes"][0]["gpus"] == 2


def test_cancel_and_users(served: Served, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "sleepy", f"""
name: sleepy
mode: rigid
entrypoint: {{command: [{PY}, -c, "import time; print('up', flush=True); time.sleep(300)"]}}
""")
    new, _ = served.run("users", "add", "bob")
    bob = new.strip()
    assert bob.startswith("thr_")
    _, err = served.run("users", "add", "eve", token=bob, code=1)
    assert "only an admin may add users" in err

    job_id = served.run("submit", str(spec), token=bob)[0].strip()
    assert served.store.get(job_id).owner == "bob"
    served.wait(job_id, ("running",))
    mine, _ = served.run("jobs", token=bob)
    assert job_id in mine and "running" in mine
    admin_view, _ = served.run("jobs")
    assert job_id in admin_view  # the admin sees everyone's jobs

    carol = served.run("users", "add", "carol")[0].strip()
    _, err = served.run("cancel", job_id, token=carol, code=1)
    assert f"no job {job_id} of yours" in err and "404" in err  # as if it did not exist
    _, err = served.run("logs", job_id, token=carol, code=1)
    assert f"no job {job_id} of yours" in err

    out, _ = served.run("cancel", job_id, token=bob)
    assert f"{job_id}: cancel requested" in out
    assert served.wait(job_id, TERMINAL_STATES) == "cancelled"
    listed, _ = served.run("jobs", "-a", token=bob)
    assert "cancelled" in listed
    _, err = served.run("cancel", "no-such-job", token=bob, code=1)
    assert "no job no-such-job" in err


def test_a_bad_spec_is_reported_field_by_field(served: Served, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "bad", """
name: "has spaces"
entrypoint: {script: train.py}
priority: 1000
resource: {max_replicas: 2}
""")
    out, err = served.run("submit", str(spec), code=2)
    assert out == ""
    assert "3 problem(s)" in err
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert sorted(line.split(":")[0] for line in lines) == ["name", "priority", "resource"]
    _, err = served.run("submit", str(tmp_path / "missing.yaml"), code=2)
    assert "no such spec file" in err
    assert served.store.jobs() == []


def test_unreachable_server_and_missing_token(served: Served, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    nowhere = f"http://127.0.0.1:{port}"
    spec = write_spec(tmp_path, "ok", "name: ok\nmode: rigid\nentrypoint: {command: ['true']}\n")
    for args in (("jobs",), ("cluster",), ("logs", "x"), ("cancel", "x"), ("submit", str(spec))):
        result = served.runner.invoke(app, [*args, "--server", nowhere])
        assert result.exit_code == 1, args
        assert result.stderr.strip() == (
            f"error: no thrifty server at {nowhere}: start one with `thrifty server` (or point "
            "--server / THRIFTY_SERVER at yours)")
    (served.home / "token").unlink()
    _, err = served.run("jobs", code=1)
    assert "wants an API token" in err and "THRIFTY_TOKEN" in err
    _, err = served.run("jobs", token="thr_wrong", code=1)
    assert "invalid API token" in err


def test_server_refuses_a_bad_setup_in_one_line(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    runner = CliRunner()

    def refused(*args: str) -> str:
        result = runner.invoke(app, ["server", *args])
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        return result.stderr

    assert "unknown policy 'nope'" in refused("--policy", "nope")
    assert "--executor must be local or ray" in refused("--executor", "k8s")
    assert "--slots must be at least 1" in refused("--slots", "0")
    assert "--interval must be positive" in refused("--interval", "0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in refused("--port", str(port))
    with (tmp_path / "server.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running server holds it
        assert "already runs on" in refused()
    assert not (tmp_path / "token").exists()  # no half-started server made an admin


def test_report_of_the_servers_jobs(served: Served, tmp_path: Path) -> None:
    """`thrifty report` without a ledger file asks the server; an admin sees every job and a
    user only their own."""
    spec = write_spec(tmp_path / "p", "nap", f"""
name: nap
mode: rigid
team: research
entrypoint:
  command: [{sys.executable}, -c, "import time; time.sleep(1.0)"]
resources:
  max_replicas: 2
""")
    job_id = served.run("submit", str(spec))[0].strip()
    served.wait(job_id, ("succeeded",))
    out = tmp_path / "usage.json"
    table, _ = served.run("report", "--by", "user", "--json", str(out))
    assert "research/admin" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["key"] for r in rows] == ["research/admin"]
    with served.store.session() as s:
        held = [(r.start, r.end) for r in s.query(AllocationRow).filter_by(job_id=job_id)]
    core_hours = math.fsum(2 * (end - start) for start, end in held) / 3600
    assert rows[0]["gpu_hours"] == pytest.approx(core_hours)
    assert rows[0]["usd"] == pytest.approx(core_hours * 0.10584 / 2)  # the built-in cpu rate
    assert rows[0]["kwh"] == pytest.approx(core_hours * 6 * 1.58 / 1000)
    token = served.store.add_user("carol")
    served.run("report", "--json", str(out), token=token)
    assert json.loads(out.read_text())["rows"] == []


def test_users_list_and_revoke(served: Served) -> None:
    bob = served.run("users", "add", "bob")[0].strip()
    listed, _ = served.run("users", "list")
    assert "admin" in listed and "bob" in listed and bob not in listed
    users = {u["name"]: u for u in json.loads(served.run("users", "list", "--json")[0])}
    assert users["admin"]["admin"] and not users["bob"]["admin"]
    assert len(users["bob"]["token_id"]) == 12 and bob not in json.dumps(users)
    _, err = served.run("users", "list", token=bob, code=1)
    assert "only an admin may list users" in err

    served.run("jobs", token=bob)
    _, err = served.run("users", "revoke", "bob")
    assert "revoked bob's token" in err
    _, err = served.run("jobs", token=bob, code=1)  # at once: the very next request
    assert "invalid API token" in err and "401" in err
    assert "revoked" in served.run("users", "list")[0]
    _, err = served.run("users", "revoke", "nobody", code=1)
    assert "no user nobody" in err


def test_a_too_deeply_nested_spec_is_one_line(served: Served, tmp_path: Path) -> None:
    for name, body in (("flow", "name: x\nenv: " + "[" * 50_000 + "\n"),
                       ("json", '{"name": "x", "env": ' + '{"a": ' * 3000 + "1" + "}" * 3001)):
        spec = write_spec(tmp_path, name, body)
        out, err = served.run("submit", str(spec), code=2)
        assert out == "" and len(err.splitlines()) == 1, err[:2000]
        assert err.startswith(f"error: {spec}: nested more than 32 levels deep")
    assert served.store.jobs() == []

"""Submission refuses what the cluster can never run: unknown GPU kinds, more replicas than it has,
a working folder that is not there, NUL bytes; each a 422 naming its field, and nothing stored.
Against a real API server on loopback with a real control plane and the local executor."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from thrifty.cli import app
from thrifty.cluster.api import ApiServer, create_app
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.spec import validate_spec
from thrifty.cluster.store import Store
from thrifty.policy.base import NodeView

PY = sys.executable


class Served:
    """A started control plane (2 CPU slots, or this machine's GPUs) behind a loopback server."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = Store(f"sqlite:///{home / 'thrifty.db'}")
        self.executor = LocalExecutor(slots=2)
        self.plane = ControlPlane(self.store, self.executor, "thrifty", interval_s=0.2,
                                  home=home, stop_grace_s=5.0)
        self.token = self.store.add_user("admin", admin=True)
        (home / "token").write_text(self.token + "\n")
        self.api = ApiServer(create_app(self.plane))
        node = self.executor.nodes()[0]
        self.kind, self.capacity = node.gpu_kind, node.num_gpus

    def post(self, spec: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.api.url}/jobs", json=spec, trust_env=False,
                          headers={"Authorization": f"Bearer {self.token}"})

    def refused(self, spec: dict[str, Any]) -> dict[str, str]:
        """The problems of a refused spec by field; fails if it was accepted or stored."""
        response = self.post(spec)
        assert response.status_code == 422, response.text
        assert self.store.count_jobs() == 0
        return {p["field"]: p["message"] for p in response.json()["problems"]}


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    monkeypatch.delenv("THRIFTY_TOKEN", raising=False)
    s = Served(tmp_path)
    s.plane.start()
    s.api.start()
    yield s
    s.api.stop()
    s.plane.stop(stop_jobs=True)
    s.store.close()


def rigid(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {"name": "never", "mode": "rigid", "working_dir": str(tmp_path),
            "entrypoint": {"command": [PY, "-c", "pass"]}, "max_restarts": 0, **fields}


def test_an_unknown_gpu_kind_is_refused_naming_the_kinds_there_are(served: Served,
                                                                    tmp_path: Path) -> None:
    found = served.refused(rigid(tmp_path, resources={"gpu_kinds": ["a100"]}))
    assert list(found) == ["resources.gpu_kinds"]
    assert "a100" in found["resources.gpu_kinds"]
    assert f"kinds are: {served.kind}" in found["resources.gpu_kinds"]


def test_more_replicas_than_the_cluster_has_are_refused_saying_the_most(served: Served,
                                                                        tmp_path: Path) -> None:
    too_many = served.capacity + 1
    found = served.refused(rigid(tmp_path, resources={"max_replicas": too_many}))
    assert list(found) == ["resources.max_replicas"]
    assert f"the most this cluster could ever give is {served.capacity} " in \
        found["resources.max_replicas"]
    adaptive = {"name": "wide", "working_dir": str(tmp_path), "entrypoint": {"script": "x.py"},
                "resources": {"min_replicas": too_many, "max_replicas": too_many}}
    found = served.refused(adaptive)
    assert list(found) == ["resources.min_replicas"]
    assert f"ask for {served.capacity} or fewer" in found["resources.min_replicas"]


def test_a_missing_working_dir_is_refused(served: Served, tmp_path: Path) -> None:
    found = served.refused(rigid(tmp_path, working_dir=str(tmp_path / "nowhere")))
    assert list(found) == ["working_dir"] and "does not exist" in found["working_dir"]
    (tmp_path / "a-file").write_text("")
    found = served.refused(rigid(tmp_path, working_dir=str(tmp_path / "a-file")))
    assert "is not a folder" in found["working_dir"]


def test_nul_bytes_are_refused_in_every_field_that_reaches_the_system(served: Served,
                                                                      tmp_path: Path) -> None:
    spec = rigid(tmp_path, entrypoint={"command": [PY, "-c", "pass\x00"], "args": ["\x00"]},
                 env={"GOOD": "va\x00lue"})
    found = served.refused(spec)
    assert set(found) == {"entrypoint.command", "entrypoint.args", "env"}
    assert all("NUL byte" in message for message in found.values())
    found = served.refused(rigid(tmp_path, working_dir=f"{tmp_path}\x00"))
    assert list(found) == ["working_dir"] and "NUL byte" in found["working_dir"]


def test_a_job_the_cluster_can_run_is_still_accepted(served: Served, tmp_path: Path) -> None:
    response = served.post(rigid(tmp_path, resources={"max_replicas": served.capacity,
                                                      "gpu_kinds": [served.kind]}))
    assert response.status_code == 201, response.text


def test_thrifty_submit_shows_each_refused_field_on_its_own_line(served: Served,
                                                                 tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: wide\nmode: rigid\nentrypoint: {{command: [{PY}, -c, pass]}}\n"
                    f"resources: {{max_replicas: 99, gpu_kinds: [{served.kind}, a100]}}\n")
    result = CliRunner().invoke(app, ["submit", str(spec)], env={"THRIFTY_SERVER": served.api.url},
                                catch_exceptions=False)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert "rejected it: invalid job spec, 2 problem(s)" in lines[0]
    assert lines[1].startswith("  resources.gpu_kinds: unknown GPU kind(s) a100")
    assert lines[2].startswith("  resources.max_replicas: 99 replicas can never run here")
    assert served.store.count_jobs() == 0


def test_cpu_only_on_a_cluster_of_gpus_is_refused() -> None:
    from thrifty.cluster.admission import problems

    spec = validate_spec({"name": "c", "entrypoint": {"script": "x.py"},
                          "resources": {"cpu_only": True}})
    nodes = [NodeView("n1", "a100", 8), NodeView("n2", "t4", 4)]
    assert problems(spec, nodes, shares_filesystem=False) == [
        ("resources.cpu_only", "this cluster has no CPU slots, only GPUs (a100, t4); "
                               "drop cpu_only")]
    # Replicas of the allowed kinds only count: 8 + 4 GPUs in all, but at most 8 of one kind.
    wide = validate_spec({"name": "w", "mode": "rigid", "entrypoint": {"command": ["x"]},
                          "resources": {"max_replicas": 9, "gpu_kinds": ["t4", "a100"]}})
    assert [f for f, _ in problems(wide, nodes, False)] == ["resources.max_replicas"]
    assert "8 a100 GPUs" in problems(wide, nodes, False)[0][1]

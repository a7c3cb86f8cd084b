"""The REST API: who may see what, how a bad spec is reported, logs, cluster and metrics, and 200
submissions at once against a real uvicorn server on loopback."""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():  # Starlette nudges towards httpx2; TestClient works as is
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from waiting import wait_for_state

from thrifty.cluster.api import ApiServer, create_app, read_from, read_tail
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import JobRow
from thrifty.cluster.states import TERMINAL_STATES
from thrifty.cluster.store import Store

PY = sys.executable


def rigid(name: str, code: str, replicas: int = 1) -> dict[str, Any]:
    return {"name": name, "mode": "rigid", "entrypoint": {"command": [PY, "-c", code]},
            "resources": {"max_replicas": replicas}, "max_restarts": 0}


class World:
    """A control plane on a temporary home, with an admin and two users."""

    def __init__(self, home: Path, slots: int = 4, interval_s: float = 0.2) -> None:
        self.store = Store(f"sqlite:///{home / 'thrifty.db'}")
        self.plane = ControlPlane(self.store, LocalExecutor(slots=slots), "thrifty",
                                  interval_s=interval_s, home=home, stop_grace_s=5.0,
                                  retry_backoff_s=0.5)
        self.tokens = {"admin": self.store.add_user("admin", admin=True),
                       "alice": self.store.add_user("alice"), "bob": self.store.add_user("bob")}
        self.app = create_app(self.plane)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout_s: float = 60.0) -> JobRow:
        return wait_for_state(self.store, job_id, states, timeout_s)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    w = World(tmp_path)
    yield w
    w.plane.stop(stop_jobs=True)
    w.store.close()


@pytest.fixture
def client(world: World) -> TestClient:
    return TestClient(world.app)


# ---- authentication and ownership ----------------------------------------------------------------


def test_requests_without_a_valid_token_get_401_and_health_needs_none(client: TestClient,
                                                                      world: World) -> None:
    for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/x"),
                         ("POST", "/jobs/x/cancel"), ("GET", "/jobs/x/logs"), ("GET", "/cluster"),
                         ("GET", "/metrics"), ("POST", "/users")):
        response = client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert "missing API token" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    bad = client.get("/jobs", headers={"Authorization": "Bearer thr_not-a-token"})
    assert bad.status_code == 401 and "invalid API token" in bad.json()["detail"]
    basic = client.get("/jobs", headers={"Authorization": f"Basic {world.tokens['alice']}"})
    assert basic.status_code == 401
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}/logs", "/cluster", "/metrics", "/users"} <= set(
        schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert client.get("/jobs", headers=world.auth("alice")).status_code == 200


def test_users_see_and_change_only_their_own_jobs(client: TestClient, world: World) -> None:
    mine = client.post("/jobs", json=rigid("mine", "pass"), headers=world.auth("alice"))
    assert mine.status_code == 201, mine.text
    job = mine.json()
    assert job["owner"] == "alice" and job["state"] == "queued"
    theirs = client.post("/jobs", json=rigid("theirs", "pass"), headers=world.auth("bob")).json()

    for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/logs"):
        response = client.get(path, headers=world.auth("bob"))
        assert response.status_code == 404, path  # another user's job is as good as missing
    assert client.post(f"/jobs/{job['id']}/cancel", headers=world.auth("bob")).status_code == 404
    assert world.store.get(job["id"]).state == "queued"  # bob's cancel changed nothing
    assert client.get("/jobs/nope-123", headers=world.auth("bob")).status_code == 404
    assert client.post("/jobs/nope-123/cancel", headers=world.auth("bob")).status_code == 404

    def ids(user: str, **params: Any) -> set[str]:
        response = client.get("/jobs", headers=world.auth(user), params=params)
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["jobs"]}

    assert ids("alice") == {job["id"]}
    assert ids("bob") == {theirs["id"]}
    assert ids("admin") == {job["id"], theirs["id"]}
    assert ids("admin", owner="bob") == {theirs["id"]}
    assert client.get("/jobs", params={"owner": "bob"},
                      headers=world.auth("alice")).status_code == 403
    assert client.get(f"/jobs/{job['id']}", headers=world.auth("admin")).status_code == 200

    # The owner of a submission is the caller; only an admin may name someone else.
    as_bob = client.post("/jobs", json={**rigid("sneaky", "pass"), "owner": "bob"},
                         headers=world.auth("alice"))
    assert as_bob.status_code == 403 and "only an admin" in as_bob.json()["detail"]
    for_bob = client.post("/jobs", json={**rigid("for-bob", "pass"), "owner": "bob"},
                          headers=world.auth("admin"))
    assert for_bob.status_code == 201 and for_bob.json()["owner"] == "bob"
    assert client.post("/jobs", json=rigid("admins", "pass"),
                       headers=world.auth("admin")).json()["owner"] == "admin"

    # Cancelling a queued job ends it at once; the owner may, the admin too.
    cancelled = client.post(f"/jobs/{job['id']}/cancel", headers=world.auth("alice"))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/jobs/{theirs['id']}/cancel",
                       headers=world.auth("admin")).json()["state"] == "cancelled"


def test_only_admins_add_users_and_new_tokens_work(client: TestClient, world: World) -> None:
    denied = client.post("/users", json={"name": "carol"}, headers=world.auth("alice"))
    assert denied.status_code == 403
    made = client.post("/users", json={"name": "carol"}, headers=world.auth("admin"))
    assert made.status_code == 201
    token = made.json()["token"]
    carol = {"Authorization": f"Bearer {token}"}
    assert client.get("/jobs", headers=carol).status_code == 200
    again = client.post("/users", json={"name": "carol"}, headers=world.auth("admin"))
    assert again.status_code == 409 and "--rotate" in again.json()["detail"]
    rotated = client.post("/users", json={"name": "carol", "rotate": True},
                          headers=world.auth("admin"))
    assert rotated.status_code == 201
    assert client.get("/jobs", headers=carol).status_code == 401  # the old token is gone
    new = {"Authorization": f"Bearer {rotated.json()['token']}"}
    assert client.get("/jobs", headers=new).status_code == 200
    bad_name = client.post("/users", json={"name": "no spaces"}, headers=world.auth("admin"))
    assert bad_name.status_code == 422


# ---- specs ---------------------------------------------------------------------------------------


def test_a_malformed_spec_gets_422_listing_every_wrong_field(client: TestClient,
                                                            world: World) -> None:
    spec = {**rigid("bad name!", "pass"), "priority": 500, "gpus": 3}
    response = client.post("/jobs", json=spec, headers=world.auth("alice"))
    assert response.status_code == 422
    body = response.json()
    fields = [p["field"] for p in body["problems"]]
    assert sorted(fields) == ["gpus", "name", "priority"]
    assert all(p["message"] for p in body["problems"])
    assert "3 problem(s)" in body["detail"]

    nested = {"name": "ok", "entrypoint": {"script": "a.py", "module": "b"},
              "resources": {"min_replicas": 0}, "env": {"RANK": "1"}}
    response = client.post("/jobs", json=nested, headers=world.auth("alice"))
    assert response.status_code == 422
    assert sorted(p["field"] for p in response.json()["problems"]) == [
        "entrypoint", "env", "resources.min_replicas"]

    broken_yaml = client.post("/jobs", content="name: [unclosed", headers={
        **world.auth("alice"), "Content-Type": "application/yaml"})
    assert broken_yaml.status_code == 422
    assert broken_yaml.json()["problems"][0]["field"] == "(spec)"
    listed = client.post("/jobs", json=[1, 2], headers=world.auth("alice"))
    assert listed.status_code == 422
    assert "mapping" in listed.json()["problems"][0]["message"]
    other = client.post("/jobs", content=b"x", headers={**world.auth("alice"),
                                                        "Content-Type": "image/png"})
    assert other.status_code == 415
    assert world.store.jobs() == []  # nothing half-stored


def test_yaml_specs_and_idempotency_keys(client: TestClient, world: World) -> None:
    text = "name: from-yaml\nmode: rigid\nentrypoint:\n  command: ['true']\npriority: 5\n"
    headers = {**world.auth("alice"), "Content-Type": "text/yaml", "Idempotency-Key": "k-1"}
    first = client.post("/jobs", content=text, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["priority"] == 5 and first.json()["name"] == "from-yaml"
    again = client.post("/jobs", content=text, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # Keys are per user: bob's "k-1" is another submission, not alice's job.
    bobs = client.post("/jobs", content=text, headers={**headers, **world.auth("bob")})
    assert bobs.status_code == 201 and bobs.json()["id"] != first.json()["id"]
    assert len(world.store.jobs()) == 2
    bad_key = client.post("/jobs", content=text, headers={**headers, "Idempotency-Key": "a b"})
    assert bad_key.status_code == 422


def test_listing_filters_and_pages(client: TestClient, world: World) -> None:
    ids = [client.post("/jobs", json=rigid(f"j{i}", "pass"), headers=world.auth("alice")).json()
           ["id"] for i in range(7)]
    client.post(f"/jobs/{ids[0]}/cancel", headers=world.auth("alice"))
    page = client.get("/jobs", params={"limit": 3, "offset": 2}, headers=world.auth("alice"))
    body = page.json()
    assert body["total"] == 7 and len(body["jobs"]) == 3
    assert [j["id"] for j in body["jobs"]] == list(reversed(ids))[2:5]  # newest first
    queued = client.get("/jobs", params={"state": "queued"}, headers=world.auth("alice")).json()
    assert queued["total"] == 6 and ids[0] not in {j["id"] for j in queued["jobs"]}
    both = client.get("/jobs", params={"state": "queued,cancelled"},
                      headers=world.auth("alice")).json()
    assert both["total"] == 7
    wrong = client.get("/jobs", params={"state": "done"}, headers=world.auth("alice"))
    assert wrong.status_code == 422 and "succeeded" in wrong.json()["detail"]
    assert client.get("/jobs", params={"limit": 5000},
                      headers=world.auth("alice")).status_code == 422


# ---- a running control plane: details, logs, cancel, cluster, metrics ----------------------------


def test_details_logs_cancel_cluster_and_metrics(client: TestClient, world: World) -> None:
    world.plane.start()
    alice = world.auth("alice")
    printer = "for i in range(50): print('line', i)\nimport sys; print('tail', file=sys.stderr)"
    done = client.post("/jobs", json=rigid("printer", printer, replicas=2), headers=alice).json()
    sleeper = client.post("/jobs", json=rigid("sleeper", "import time; time.sleep(120)"),
                          headers=alice).json()
    world.wait_state(done["id"], ("succeeded",))
    world.wait_state(sleeper["id"], ("running",))

    detail = client.get(f"/jobs/{done['id']}", headers=alice).json()
    assert [e["kind"] for e in detail["events"]] == ["submitted", "started", "succeeded"]
    assert detail["attempts"][0]["exit_codes"] == [0, 0]
    assert detail["attempts"][0]["allocation"]["gpus"] == {"local": 2}
    assert detail["spec"]["mode"] == "rigid" and detail["finished_at"] >= detail["started_at"]

    logs = client.get(f"/jobs/{done['id']}/logs", params={"tail": 2}, headers=alice).json()
    assert logs["attempt"] == 1 and [r["rank"] for r in logs["ranks"]] == [0, 1]
    for rank in logs["ranks"]:
        assert rank["text"].splitlines() == ["line 49", "tail"]
    whole = client.get(f"/jobs/{done['id']}/logs", params={"rank": 1}, headers=alice).json()
    assert len(whole["ranks"]) == 1 and whole["ranks"][0]["text"].count("\n") == 51
    size = whole["ranks"][0]["end"]
    later = client.get(f"/jobs/{done['id']}/logs", params={"rank": 1, "offset": size - 5},
                       headers=alice).json()
    assert later["ranks"][0]["text"] == "tail\n"

    cluster = client.get("/cluster", headers=alice).json()
    assert cluster["nodes"] == [{"name": "local", "gpu_kind": "cpu", "gpus": 4, "used": 1,
                                 "price_per_hour": 0.0}]
    assert cluster["jobs"]["running"] == 1 and cluster["jobs"]["succeeded"] == 1
    assert cluster["policy"] == "thrifty" and cluster["rounds"] >= 1
    assert cluster["last_round"]["total_s"] > 0

    metrics = client.get("/metrics", headers=alice)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines()
                   if not line.startswith("#"))
    assert samples['thrifty_jobs{state="running"}'] == "1"
    assert samples['thrifty_jobs{state="succeeded"}'] == "1"
    assert samples['thrifty_gpus{kind="cpu"}'] == "4"
    assert samples['thrifty_gpus_allocated{kind="cpu"}'] == "1"
    assert int(samples["thrifty_scheduling_rounds_total"]) >= 1
    assert float(samples["thrifty_scheduling_round_seconds"]) > 0

    cancel = client.post(f"/jobs/{sleeper['id']}/cancel", headers=alice).json()
    assert cancel["cancel_requested"] is True
    row = world.wait_state(sleeper["id"], TERMINAL_STATES, timeout_s=30)
    assert row.state == "cancelled"
    after = client.get(f"/jobs/{sleeper['id']}/logs", headers=alice).json()
    assert after["state"] == "cancelled" and after["attempt"] == 1


def test_log_readers_tail_and_follow(tmp_path: Path) -> None:
    path = tmp_path / "log"
    lines = [f"{i:06d} " + "x" * (i % 300) for i in range(20_000)]
    path.write_text("\n".join(lines) + "\n")
    text, start, end, clipped = read_tail(path, 3)
    assert text.splitlines() == lines[-3:] and end == path.stat().st_size and not clipped
    assert start == end - len(text.encode())
    text, _, _, clipped = read_tail(path, 10**9, cap=10_000)
    assert clipped and len(text.encode()) <= 10_000
    assert text.splitlines()[-1] == lines[-1]
    assert read_tail(path, 0)[0] == ""
    offset, seen = 0, []
    while True:
        chunk, _, offset, more = read_from(path, offset, cap=100_000)
        assert chunk.endswith("\n")  # never half a line while there is more
        seen.append(chunk)
        if not more:
            break
    assert "".join(seen).splitlines() == lines


# ---- many clients at once, over real HTTP --------------------------------------------------------


def test_200_concurrent_submissions_store_each_job_once_and_all_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    world = World(tmp_path, slots=8, interval_s=0.2)
    try:
        _submit_many(world)
    finally:
        world.plane.stop(stop_jobs=True)
        world.store.close()


def _submit_many(world: World) -> None:
    world.plane.start()
    keys = [uuid.uuid4().hex for _ in range(200)]
    retried = set(random.Random(0).sample(range(200), 40))
    plan = [(i, keys[i]) for i in range(200)] + [(i, keys[i]) for i in sorted(retried)]
    random.Random(1).shuffle(plan)
    answers: dict[str, set[str]] = {key: set() for key in keys}
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with ApiServer(world.app) as server:

        def worker(items: list[tuple[int, str]]) -> None:
            with httpx.Client(base_url=server.url, headers=world.auth("alice"),
                              timeout=60) as http:
                for i, key in items:
                    try:
                        response = http.post("/jobs", json=rigid(f"many-{i}", "pass"),
                                             headers={"Idempotency-Key": key})
                        with lock:
                            statuses.append(response.status_code)
                            if response.status_code in (200, 201):
                                answers[key].add(response.json()["id"])
                    except BaseException as err:  # reported below, not lost in a thread
                        errors.append(err)

        threads = [threading.Thread(target=worker, args=(plan[t::24],)) for t in range(24)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submit_s = time.monotonic() - started
        assert not errors, errors[:3]
        assert set(statuses) <= {200, 201} and len(statuses) == 240, statuses
        # A retry racing its first try may be answered 201 too; either way it is the same job.
        assert statuses.count(201) >= 200
        assert all(len(ids) == 1 for ids in answers.values())  # a retry got the same job back
        rows = world.store.jobs()
        assert len(rows) == 200
        assert {r.id for r in rows} == {next(iter(ids)) for ids in answers.values()}
        assert sorted(r.name for r in rows) == sorted(f"many-{i}" for i in range(200))
        assert world.plane.wait_idle(timeout_s=90, poll_s=0.2)
        rows = world.store.jobs()
        assert {r.state for r in rows} == {"succeeded"}, [(r.id, r.state, r.message)
                                                         for r in rows if r.state != "succeeded"]
        listed = httpx.get(f"{server.url}/jobs", params={"limit": 1000, "state": "succeeded"},
                           headers=world.auth("alice")).json()
        assert listed["total"] == 200
    assert submit_s < 60

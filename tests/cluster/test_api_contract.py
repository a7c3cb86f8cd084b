"""The API's contract against a real uvicorn server on loopback: no input gets a 5xx, a reused
Idempotency-Key with another spec is a 409, another user's job looks missing, the OpenAPI
document says what the routes really answer, /docs works offline, and admins list and revoke
users."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from waiting import wait_for_state

from thrifty.cluster.api import ApiServer, create_app
from thrifty.cluster.api.common import ErrorBody, Problems
from thrifty.cluster.api.users import NewToken, UserInfo, UserList
from thrifty.cluster.api.views import JobDetail, JobLogs, JobPage, JobSummary
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.store import MAX_INT, Store

PY = sys.executable


def rigid(name: str, code: str = "pass", **extra: Any) -> dict[str, Any]:
    return {"name": name, "mode": "rigid", "entrypoint": {"command": [PY, "-c", code]},
            "max_restarts": 0, **extra}


class Served:
    """A control plane (its loop not started: jobs stay queued) served on a loopback port,
    with an admin and two users."""

    def __init__(self, home: Path) -> None:
        self.store = Store(f"sqlite:///{home / 'thrifty.db'}")
        self.plane = ControlPlane(self.store, LocalExecutor(slots=2), "thrifty", interval_s=0.2,
                                  home=home)
        self.tokens = {name: self.store.add_user(name, admin=name == "admin")
                       for name in ("admin", "alice", "bob")}
        self.app = create_app(self.plane)
        self.api = ApiServer(self.app).start()
        self.http = httpx.Client(base_url=self.api.url, trust_env=False, timeout=30)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def close(self) -> None:
        self.http.close()
        self.api.stop()
        self.store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def problems(response: httpx.Response) -> list[tuple[str, str]]:
    """A 422's problems, after checking the body is the documented `Problems`."""
    assert response.status_code == 422, response.text
    body = Problems.model_validate(response.json())
    return [(p.field, p.message) for p in body.problems]


# ---- no 5xx from input ---------------------------------------------------------------------------


def test_integer_parameters_are_bounded_to_what_the_database_holds(served: Served) -> None:
    alice = served.auth("alice")
    for offset in (2**63, 2**31, -1):
        response = served.http.get("/jobs", params={"offset": offset}, headers=alice)
        assert [field for field, _ in problems(response)] == ["query.offset"], offset
    page = served.http.get("/jobs", params={"offset": MAX_INT}, headers=alice)
    assert page.status_code == 200 and page.json()["jobs"] == []
    job = served.http.post("/jobs", json=rigid("j"), headers=alice).json()
    for name, value in (("attempt", 2**63), ("rank", 2**31), ("offset", 2**64), ("tail", 10**9)):
        response = served.http.get(f"/jobs/{job['id']}/logs", params={name: value}, headers=alice)
        assert [field for field, _ in problems(response)] == [f"query.{name}"], name
    # A spec's own numbers too: a batch no INTEGER column holds, an infinite deadline.
    for extra in ({"batch_size": 2**63}, {"deadline_s": "inf"}):
        response = served.http.post("/jobs", json=rigid("k", **extra), headers=alice)
        assert [field for field, _ in problems(response)] == list(extra), extra
    huge = served.http.post("/jobs", content='{"name": "x", "priority": 1e999}',
                            headers={**alice, "Content-Type": "application/json"})
    assert "does not fit" in problems(huge)[0][1]
    assert len(served.store.jobs()) == 1


def test_deeply_nested_json_and_yaml_are_a_422_that_names_the_problem(served: Served) -> None:
    alice = served.auth("alice")
    json_type = {**alice, "Content-Type": "application/json"}
    yaml_type = {**alice, "Content-Type": "application/yaml"}
    bodies = [
        ("[" * 100_000 + "]" * 100_000, json_type),
        ('{"name": "x", "env": ' + '{"a": ' * 5000 + "1" + "}" * 5001, json_type),
        ("[" * 100_000, yaml_type),
        ("name: x\nenv:\n" + "".join("  " * i + "a:\n" for i in range(1, 200)), yaml_type),
    ]
    for body, headers in bodies:
        response = served.http.post("/jobs", content=body, headers=headers)
        [(field, message)] = problems(response)
        assert "nested more than 32 levels deep" in message and "flatten" in message, field
    # YAML's aliases: a few lines that would expand to a million values.
    bomb = "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True))
    [(_, message)] = problems(served.http.post("/jobs", content=bomb, headers=yaml_type))
    assert "expands to more than" in message
    # Any route that reads JSON is measured before FastAPI parses it.
    deep_user = served.http.post("/users", content="[" * 50_000, headers={
        **served.auth("admin"), "Content-Type": "application/json"})
    assert "nested more than" in problems(deep_user)[0][1]
    assert served.store.jobs() == []


def test_an_oversized_body_is_a_413_told_or_streamed(served: Served) -> None:
    alice = {**served.auth("alice"), "Content-Type": "application/json"}
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    told = served.http.post("/jobs", content=big, headers=alice)
    assert told.status_code == 413, told.text
    assert "limit" in ErrorBody.model_validate(told.json()).detail

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * (64 << 10)

    streamed = served.http.post("/jobs", content=chunks(), headers=alice)
    assert streamed.status_code == 413
    assert served.store.jobs() == []


# ---- idempotency ---------------------------------------------------------------------------------


def test_a_reused_idempotency_key_with_another_spec_is_a_409_and_stores_nothing(
        served: Served) -> None:
    headers = {**served.auth("alice"), "Idempotency-Key": "retry-1"}
    first = served.http.post("/jobs", json=rigid("first"), headers=headers)
    assert first.status_code == 201
    # The same job written as YAML, with a default spelled out: the same request.
    same = served.http.post("/jobs", content=(
        f"name: first\nmode: rigid\nmax_restarts: 0\npriority: 0\n"
        f"entrypoint: {{command: [{json.dumps(PY)}, -c, pass]}}\n"),
        headers={**headers, "Content-Type": "application/yaml"})
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    other = served.http.post("/jobs", json=rigid("second"), headers=headers)
    assert other.status_code == 409
    detail = ErrorBody.model_validate(other.json()).detail
    assert "'retry-1' was already used for a different request" in detail
    assert first.json()["id"] in detail and "new key" in detail
    assert [row.name for row in served.store.jobs()] == ["first"]


def test_a_key_stored_before_hashes_were_kept_returns_its_job(tmp_path: Path) -> None:
    """A database from before the migration: its keys have no hash and answer as they did."""
    from alembic import command
    from alembic.config import Config

    import thrifty.cluster.store as store_module

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location",
                           str(Path(store_module.__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(sa.text(
            "INSERT INTO jobs (id, name, owner, team, spec, state, priority, submitted_at, "
            "restarts, failures, attained_service, replica_seconds, cancel_requested, message, "
            "request_key) VALUES ('old-1', 'old', 'alice', 'default', :spec, 'queued', 0, 1.0, "
            "0, 0, 0.0, 0.0, 0, '', 'alice:k')"), {"spec": json.dumps(rigid("old"))})
    engine.dispose()
    store = Store(url)  # upgrades to the newest schema
    from thrifty.cluster.spec import validate_spec

    assert store.submit(validate_spec(rigid("new")), request_key="alice:k").id == "old-1"
    fresh = store.submit(validate_spec(rigid("new")), request_key="alice:k2")
    assert fresh.request_hash is not None and len(store.jobs()) == 2
    store.close()


# ---- no existence oracle -------------------------------------------------------------------------


def test_another_users_job_answers_exactly_as_a_missing_one(served: Served) -> None:
    job_id = served.http.post("/jobs", json=rigid("mine"), headers=served.auth("alice")).json()[
        "id"]
    missing = re.sub(r"[0-9a-f]{10}$", "0" * 10, job_id)
    for method, suffix in (("GET", ""), ("GET", "/logs"), ("POST", "/cancel")):
        theirs = served.http.request(method, f"/jobs/{job_id}{suffix}", headers=served.auth("bob"))
        absent = served.http.request(method, f"/jobs/{missing}{suffix}",
                                     headers=served.auth("bob"))
        assert theirs.status_code == absent.status_code == 404
        assert theirs.text.replace(job_id, "ID") == absent.text.replace(missing, "ID")
        assert sorted(theirs.headers.keys()) == sorted(absent.headers.keys())
    assert served.store.get(job_id).state == "queued"  # bob's cancel changed nothing
    assert served.http.get(f"/jobs/{job_id}", headers=served.auth("admin")).status_code == 200
    assert served.http.get(f"/jobs/{job_id}", headers=served.auth("alice")).status_code == 200


# ---- the documented contract ---------------------------------------------------------------------


def test_openapi_has_the_job_spec_and_every_error_each_route_gives(served: Served) -> None:
    doc = served.http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert {"JobSpec", "Entrypoint", "Resources", "Problems", "ErrorBody"} <= set(schemas)
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body is never sent
    spec = schemas["JobSpec"]
    assert spec["additionalProperties"] is False and spec["required"] == ["name", "entrypoint"]
    assert spec["properties"]["resources"]["$ref"] == "#/components/schemas/Resources"
    submit = doc["paths"]["/jobs"]["post"]
    content = submit["requestBody"]["content"]
    for kind in ("application/json", "application/yaml"):
        assert content[kind]["schema"] == {"$ref": "#/components/schemas/JobSpec"}
    expected = {
        ("post", "/jobs"): {"200", "201", "400", "401", "403", "409", "413", "415", "422"},
        ("get", "/jobs"): {"200", "401", "403", "422"},
        ("get", "/jobs/{job_id}"): {"200", "401", "404", "422"},
        ("post", "/jobs/{job_id}/cancel"): {"200", "401", "404", "422"},
        ("get", "/jobs/{job_id}/logs"): {"200", "401", "404", "422"},
        ("get", "/users"): {"200", "401", "403"},
        ("post", "/users"): {"201", "401", "403", "409", "413", "422"},
        ("post", "/users/{name}/revoke"): {"200", "401", "403", "404", "409", "422"},
        ("get", "/healthz"): {"200", "503"},
    }
    for (method, path), codes in expected.items():
        responses = doc["paths"][path][method]["responses"]
        assert codes <= set(responses), (method, path, sorted(responses))
        for code in codes - {"200", "201"}:
            model = "Problems" if code == "422" else "ErrorBody"
            assert responses[code]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{model}"}, (method, path, code)
    offset = next(p for p in doc["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] == MAX_INT and offset["schema"]["minimum"] == 0
    # The 422 a route really sends is the documented one, FastAPI's own checks included.
    assert problems(served.http.get("/jobs", params={"limit": 0},
                                    headers=served.auth("alice")))[0][0] == "query.limit"
    assert problems(served.http.post("/jobs", json={"name": "x"},
                                     headers=served.auth("alice")))[0][0] == "entrypoint"
    assert problems(served.http.get("/jobs", params={"state": "done"},
                                    headers=served.auth("alice")))[0][0] == "query.state"


def test_what_the_job_routes_answer_is_what_their_models_say(served: Served) -> None:
    served.plane.start()
    try:
        alice = served.auth("alice")
        submitted = served.http.post("/jobs", json=rigid("talks", "print('hello')"),
                                     headers=alice)
        job = JobSummary.model_validate(submitted.json(), strict=True)
        wait_for_state(served.store, job.id, ("succeeded",), 60)
        detail = JobDetail.model_validate(served.http.get(f"/jobs/{job.id}", headers=alice)
                                          .json(), strict=True)
        assert detail.attempts[0].exit_codes == [0] and detail.events
        logs = JobLogs.model_validate(served.http.get(f"/jobs/{job.id}/logs", headers=alice)
                                      .json(), strict=True)
        assert logs.ranks[0].text == "hello\n"
        page = JobPage.model_validate(served.http.get("/jobs", headers=alice).json(),
                                      strict=True)
        assert [j.id for j in page.jobs] == [job.id]
        cancelled = served.http.post(f"/jobs/{job.id}/cancel", headers=alice).json()
        assert JobSummary.model_validate(cancelled, strict=True).state == "succeeded"
        made = served.http.post("/users", json={"name": "carol"}, headers=served.auth("admin"))
        NewToken.model_validate(made.json(), strict=True)
        users = served.http.get("/users", headers=served.auth("admin")).json()
        assert len(UserList.model_validate(users, strict=True).users) == 4
        revoked = served.http.post("/users/carol/revoke", headers=served.auth("admin")).json()
        UserInfo.model_validate(revoked, strict=True)
    finally:
        served.plane.stop(stop_jobs=True)


def test_docs_render_from_the_app_alone(served: Served) -> None:
    page = served.http.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        assert asset.startswith("/"), asset
        fetched = served.http.get(asset)
        assert fetched.status_code == 200 and len(fetched.content) > 100, asset
    bundle = served.http.get("/static/docs/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    spec_url = re.search(r"url: '([^']+)'", html).group(1)
    assert served.http.get(spec_url).json()["info"]["title"] == "thrifty"
    assert '"validatorUrl": null' in html  # no call to Swagger's online validator
    assert served.http.get("/redoc").status_code == 404  # FastAPI's CDN page is gone


# ---- users ---------------------------------------------------------------------------------------


def test_admins_list_users_without_their_tokens_and_revoke_them_at_once(served: Served) -> None:
    admin, alice = served.auth("admin"), served.auth("alice")
    listed = served.http.get("/users", headers=admin)
    assert listed.status_code == 200
    users = {u["name"]: u for u in listed.json()["users"]}
    assert set(users) == {"admin", "alice", "bob"}
    assert users["admin"]["admin"] and not users["alice"]["admin"]
    assert users["alice"]["created_at"] > 0 and len(users["alice"]["token_id"]) == 12
    for token in served.tokens.values():
        assert token not in listed.text
    with served.store.session() as s:
        hashes = [h for (h,) in s.execute(sa.text("SELECT token_hash FROM users"))]
    assert not any(h in listed.text for h in hashes)  # only a prefix of each hash
    assert served.http.get("/users", headers=alice).status_code == 403

    assert served.http.get("/jobs", headers=alice).status_code == 200
    revoked = served.http.post("/users/alice/revoke", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["token_id"] is None and revoked.json()["revoked_at"] > 0
    gone = served.http.get("/jobs", headers=alice)  # the very next request
    assert gone.status_code == 401 and "invalid API token" in gone.json()["detail"]
    assert served.http.get("/users", headers=admin).json()["users"][1]["token_id"] is None

    assert served.http.post("/users/admin/revoke", headers=admin).status_code == 409
    assert served.http.post("/users/nobody/revoke", headers=admin).status_code == 404
    assert served.http.post("/users/bob/revoke", headers=served.auth("bob")).status_code == 403
    rotated = served.http.post("/users", json={"name": "alice", "rotate": True}, headers=admin)
    new = {"Authorization": f"Bearer {rotated.json()['token']}"}
    assert served.http.get("/jobs", headers=new).status_code == 200
    assert served.http.get("/jobs", headers=alice).status_code == 401

"""Job specs are validated field by field; the store keeps jobs across reopenings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thrifty.cluster.spec import SpecError, load_spec, parse_spec, validate_spec
from thrifty.cluster.states import CANCELLED, QUEUED
from thrifty.cluster.store import Store

GOOD = """
name: mnist
entrypoint: {script: train.py, args: [--epochs, "3"]}
resources: {min_replicas: 1, max_replicas: 4, gpu_kinds: [t4]}
team: vision
"""


def test_a_good_spec_in_yaml_and_json_gives_the_same_job() -> None:
    from_yaml = parse_spec(GOOD)
    from_json = parse_spec(json.dumps(from_yaml.model_dump(mode="json")))
    assert from_yaml == from_json
    assert from_yaml.entrypoint.argv("py") == ["py", "train.py", "--epochs", "3"]
    assert from_yaml.resources.allowed_kinds() == ("t4",)
    assert from_yaml.adaptive and from_yaml.requested_replicas() == 1


def test_every_wrong_field_is_named() -> None:
    text = """
name: "two words"
entrypoint: {script: a.py, module: b}
resources: {min_replicas: 4, max_replicas: 2}
priority: 1000
colour: blue
env: {RANK: "3"}
"""
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    paths = {path for path, _ in caught.value.problems}
    assert paths == {"name", "entrypoint", "resources", "priority", "colour", "env"}
    message = str(caught.value)
    assert "max_replicas (2) is below min_replicas (4)" in message
    assert "unknown field" in message and "RANK" in message


def test_mode_rules() -> None:
    with pytest.raises(SpecError, match="cannot be non-preemptible"):
        parse_spec("name: a\nentrypoint: {script: a.py}\npreemptible: false")
    with pytest.raises(SpecError, match="mode: rigid"):
        parse_spec("name: a\nentrypoint: {command: [sleep, '1']}")
    rigid = parse_spec("name: a\nentrypoint: {command: [sleep, '1']}\nmode: rigid\n"
                       "preemptible: false\nresources: {min_replicas: 2, max_replicas: 2}")
    assert rigid.requested_replicas() == 2 and not rigid.adaptive


def test_not_a_mapping_and_not_yaml() -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_spec("- a\n- b\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("name: [unclosed")


def test_a_relative_working_dir_is_taken_from_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "spec.yaml"
    path.write_text(GOOD + "working_dir: code\n")
    assert load_spec(path).working_dir == str(tmp_path / "jobs" / "code")


def test_store_survives_reopening_and_deduplicates_retries(db_url: str) -> None:
    url = db_url
    store = Store(url)
    first = store.submit(parse_spec(GOOD), request_key="abc")
    again = store.submit(parse_spec(GOOD), request_key="abc")
    other = store.submit(parse_spec(GOOD))
    assert first.id == again.id != other.id
    store.close()
    reopened = Store(url)  # migrations run again: a no-op on an up-to-date schema
    assert {j.id for j in reopened.jobs()} == {first.id, other.id}
    assert reopened.get(first.id).state == QUEUED
    assert reopened.request_cancel(first.id).state == CANCELLED
    assert [e.kind for e in reopened.events(first.id)] == ["submitted", "cancel"]


def test_tokens_are_stored_hashed(db_url: str) -> None:
    store = Store(db_url)
    token = store.add_user("ana", admin=True)
    user = store.user_for_token(token)
    assert user is not None and user.name == "ana" and user.admin
    assert token not in user.token_hash
    assert store.user_for_token(token + "x") is None
    renewed = store.add_user("ana")
    assert store.user_for_token(token) is None and store.user_for_token(renewed) is not None


def test_concurrent_submissions_with_retries_are_stored_once(db_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = Store(db_url)
    spec = parse_spec(GOOD)
    keys = [f"key-{i % 40}" for i in range(120)]  # each submission sent three times
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda key: store.submit(spec, request_key=key).id, keys))
    assert len(store.jobs()) == 40
    assert len(set(ids)) == 40
    by_key = {}
    for key, job_id in zip(keys, ids, strict=True):
        assert by_key.setdefault(key, job_id) == job_id


def test_an_unreachable_database_is_a_clear_error() -> None:
    from thrifty.errors import ThriftyError

    with pytest.raises(ThriftyError, match="THRIFTY_DB_URL"):
        Store("sqlite:////nonexistent-folder/x/db.sqlite")


def test_report_history_keeps_batch_changes_and_one_a_minute(tmp_path: Path) -> None:
    from sqlalchemy import select

    from thrifty.cluster.schema import JobRow, ReportRow
    from thrifty.cluster.store import REPORT_HISTORY_S, keep_report

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job_id = store.submit(parse_spec(GOOD), now=0.0).id
    reports = [(0.0, 32), (5.0, 32), (10.0, 64), (15.0, 64), (10.0 + REPORT_HISTORY_S, 64)]
    for step, (at, batch) in enumerate(reports):
        with store.session() as s:
            keep_report(s, s.get(JobRow, job_id), {"step": step, "batch_size": batch}, at)
    with store.session() as s:
        kept = [r.report["step"] for r in s.scalars(select(ReportRow).order_by(ReportRow.at))]
    assert kept == [0, 2, 4]  # first, the batch change, a minute after the last kept
    assert store.get(job_id).report == {"step": 4, "batch_size": 64}


def test_a_typed_handle_is_stored_as_json_and_read_back_as_before(tmp_path: Path) -> None:
    """Executor handles are frozen dataclasses; the store keeps their to_dict(), and a handle
    stored by an earlier version (a plain dict without `executor`) still reads."""
    from thrifty.cluster.executor import AttemptStatus
    from thrifty.cluster.local import LocalExecutor, LocalHandle
    from thrifty.cluster.schema import Attempt
    from thrifty.errors import ThriftyError

    handle = LocalHandle("job-1/1", (11, 12), (5, None), ("/x/0.exit", "/x/1.exit"), (0,),
                         "/x/report.json")
    stored = json.loads(json.dumps(handle.to_dict()))
    assert stored["executor"] == "local" and LocalHandle.from_dict(stored) == handle
    old = {k: v for k, v in stored.items() if k != "executor"}
    assert LocalHandle.read(old) == handle
    assert LocalHandle.read({}) is None and LocalHandle.read(None) is None
    with pytest.raises(ThriftyError, match="ray executor"):
        LocalHandle.read({**stored, "executor": "ray"})

    store = Store(f"sqlite:///{tmp_path / 'thrifty.db'}")
    job = store.submit(validate_spec({"name": "h", "mode": "rigid", "entrypoint": {
        "command": ["true"]}}, owner="alice"))
    with store.session() as s:
        s.add(Attempt(job_id=job.id, number=1, allocation={}, handle=handle, started_at=0.0))
    (attempt,) = store.attempts(job.id)
    assert attempt.handle == stored
    assert LocalExecutor(slots=1).poll({}) == AttemptStatus.missing()
    store.close()

"""Schemathesis against the API's own OpenAPI document: generated requests, valid and not, to
every operation, with and without a token. Any 5xx, any status code or content type the
document does not list, and any body that breaks its documented schema fails.

Requests go to the ASGI app in this process, over a real store on a temporary SQLite file, its
scheduling loop not started (a submitted job stays queued and runs nothing). Examples per
operation are capped and the seed fixed, so that a run takes seconds and gives the same cases
each time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from thrifty.cluster.api import create_app
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.store import Store

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
SEED = 20240611
FUZZ = settings(max_examples=30, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)


class Fuzzed:
    """An app over a fresh store, with an admin and a user."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = Store(f"sqlite:///{home / 'thrifty.db'}")
        self.plane = ControlPlane(self.store, LocalExecutor(slots=2), "thrifty", interval_s=1.0,
                                  home=home)
        self.admin = self.store.add_user("admin", admin=True)
        self.user = self.store.add_user("ana")
        self.app = create_app(self.plane)


# Schemathesis parametrizes at collection, so the app exists then (its lazy, fixture-based
# loader does not run under this pytest); the fixture below removes it after the module.
WORLD = Fuzzed(Path(tempfile.mkdtemp(prefix="thrifty-fuzz-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", WORLD.app)
schema.config.seed = SEED


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    WORLD.store.close()
    shutil.rmtree(WORLD.home, ignore_errors=True)


@schema.parametrize()
@FUZZ
def test_with_a_token_every_answer_is_documented(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {WORLD.user}"}, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_as_an_admin_every_answer_is_documented(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {WORLD.admin}"}, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_without_a_token_every_answer_is_documented(case: Any) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items()
                    if k.lower() != "authorization"}
    case.call_and_validate(checks=CHECKS)

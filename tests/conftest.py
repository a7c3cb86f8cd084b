"""Shared fixtures: the measured data folder, found the same way the CLI finds it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from thrifty.settings import Settings


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Settings.from_env().require_data()


def _postgres_database(base_url: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server at `base_url`, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"thrifty_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The job store's two back ends. PostgreSQL runs where THRIFTY_TEST_DB_URL names a server
    (`.ci/run` starts one when this machine has PostgreSQL) and is skipped elsewhere."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'thrifty.db'}"
        return
    base = os.environ.get("THRIFTY_TEST_DB_URL")
    if not base:
        pytest.skip("THRIFTY_TEST_DB_URL is not set: no PostgreSQL server to test against")
    yield from _postgres_database(base)

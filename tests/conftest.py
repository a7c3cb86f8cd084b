"""Shared fixtures: the measured data folder, found the same way the CLI finds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.settings import Settings


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Settings.from_env().require_data()

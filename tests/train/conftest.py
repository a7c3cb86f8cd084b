"""In-process job fixture for the tests of thrifty.train."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def job_factory() -> Iterator:
    """Create in-process single-replica jobs and always release their signal handlers."""
    from thrifty.train import init

    made = []

    def make(**kwargs):
        job = init(**kwargs)
        made.append(job)
        return job

    yield make
    for job in made:
        job.finish()

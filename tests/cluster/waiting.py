"""Waiting for a job of the store to reach a state, for every test that drives a live plane."""

from __future__ import annotations

import time

from thrifty.cluster.schema import JobRow
from thrifty.cluster.store import Store


def wait_for_state(
    store: Store, job_id: str, states: tuple[str, ...], timeout_s: float = 60.0
) -> JobRow:
    """The job's row once its state is one of `states`; on timeout, fail with its state and
    events, which say where it got stuck."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = store.get(job_id)
        if row is not None and row.state in states:
            return row
        time.sleep(0.05)
    row = store.get(job_id)
    raise AssertionError(
        f"{job_id} not in {states} after {timeout_s} s: "
        f"{None if row is None else row.state}, {store.events(job_id)}"
    )

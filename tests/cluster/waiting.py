"""Waiting in tests that drive a live plane: for a job of the store to reach a state, for a
condition, and the job that trains until the test says stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from thrifty.cluster.schema import JobRow
from thrifty.cluster.store import Store

T = TypeVar("T")

# Trains (checkpointing every epoch, resuming after a restart) until the file given as
# --stop-file exists: see its docstring. Tests that need a job alive through an event run it, so
# that the test, not the machine's speed, decides how long the job lasts.
UNTIL_STOPPED = Path(__file__).resolve().parent / "jobs" / "digits_until_stopped.py"


def until_stopped(stop_file: Path) -> dict[str, object]:
    """The entrypoint of a training job that ends once `stop_file` exists."""
    return {"script": str(UNTIL_STOPPED), "args": ["--stop-file", str(stop_file)]}


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


def wait_until(check: Callable[[], T], what: str, timeout_s: float = 60.0,
               every_s: float = 0.1) -> T:
    """`check()`'s first true value; on timeout, fail saying what was awaited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what}: not seen in {timeout_s} s")

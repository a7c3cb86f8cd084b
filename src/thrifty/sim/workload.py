"""Workloads: which jobs arrive when, and what their owners asked for.

A workload is a CSV file `name,time,application,num_replicas,batch_size` (time in seconds from
the start). `num_replicas,batch_size` are the owner's request: rigid policies honour them,
adaptive ones may ignore them. Optional columns `user` and `team` say whose job it is, for
accounting and budgets; files without them load unchanged. An optional column `deadline` gives,
in seconds after submission, when a job must be finished; a job with one may be started later, in
greener hours, by a carbon-aware scheduler (`thrifty.policy.carbon_aware`). An empty cell means
no deadline.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from thrifty.errors import InputError

COLUMNS = ("name", "time", "application", "num_replicas", "batch_size")
OWNER_COLUMNS = ("user", "team")  # optional
DEADLINE_COLUMN = "deadline"  # optional: seconds after submission


@dataclass(frozen=True)
class TraceJob:
    """One job of a workload trace: when it arrives, what it trains, and what its owner asked
    for (rigid policies honour the request; a submitted live job is `cluster.spec.JobSpec`)."""

    name: str
    submit_time: float
    application: str
    num_replicas: int
    batch_size: int
    user: str = ""
    team: str = ""
    deadline: float | None = None  # seconds after submission; None: no deadline

    @property
    def deadline_at(self) -> float | None:
        """The deadline on the simulation clock, or None."""
        return None if self.deadline is None else self.submit_time + self.deadline

    @property
    def owner(self) -> str:
        """`team/user` (see thrifty.accounting.ledger.split_owner), or "" when unowned."""
        if not self.team and not self.user:
            return ""
        return f"{self.team or self.user}/{self.user or self.team}"


@dataclass(frozen=True)
class Workload:
    name: str
    path: Path
    jobs: tuple[TraceJob, ...]


def _field(path: Path, line: int, row: dict[str, str], column: str, cast: type) -> float | int:
    text = (row.get(column) or "").strip()
    try:
        value = cast(float(text)) if cast is int and text.endswith(".0") else cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise InputError(str(path), f"expected {kind}, got {text!r}", line, column) from None
    if value < 0 or (column in ("num_replicas", "batch_size") and value < 1):
        raise InputError(str(path), f"must be positive, got {text!r}", line, column)
    return value


def _owner_field(path: Path, line: int, row: dict[str, str], column: str) -> str:
    text = (row.get(column) or "").strip()
    if "/" in text:
        raise InputError(str(path), f"must not contain '/', got {text!r}", line, column)
    return text


def _deadline_field(path: Path, line: int, row: dict[str, str]) -> float | None:
    text = (row.get(DEADLINE_COLUMN) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(str(path), f"expected seconds after submission, got {text!r}", line,
                         DEADLINE_COLUMN) from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(str(path), f"must be a positive number of seconds, got {text!r}", line,
                         DEADLINE_COLUMN)
    return value


def load_workload(path: Path, applications: Iterable[str] | None = None) -> Workload:
    """Read and validate one workload file; `applications` lists the names that have profiles."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "workload file not found")
    known = set(applications) if applications is not None else None
    jobs: list[TraceJob] = []
    names: set[str] = set()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(str(path), f"missing column(s) {', '.join(missing)}", 1)
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise InputError(str(path), "more fields than the header has", line)
            name = (row["name"] or "").strip()
            if not name:
                raise InputError(str(path), "empty job name", line, "name")
            if name in names:
                raise InputError(str(path), f"duplicate job name {name!r}", line, "name")
            names.add(name)
            app = (row["application"] or "").strip()
            if known is not None and app not in known:
                raise InputError(
                    str(path),
                    f"unknown application {app!r} (known: {', '.join(sorted(known))})",
                    line,
                    "application",
                )
            jobs.append(TraceJob(
                name=name,
                submit_time=float(_field(path, line, row, "time", float)),
                application=app,
                num_replicas=int(_field(path, line, row, "num_replicas", int)),
                batch_size=int(_field(path, line, row, "batch_size", int)),
                user=_owner_field(path, line, row, "user"),
                team=_owner_field(path, line, row, "team"),
                deadline=_deadline_field(path, line, row),
            ))
    if not jobs:
        raise InputError(str(path), "no jobs in the workload")
    jobs.sort(key=lambda j: j.submit_time)
    return Workload(name=path.stem, path=path, jobs=tuple(jobs))


def workload_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their CSV files (sorted); keep files as given."""
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.csv"))
            if not found:
                raise InputError(str(p), "folder holds no .csv workload files")
            files.extend(found)
        else:
            files.append(p)
    return files


def scale_load(workload: Workload, load: float) -> Workload:
    """The same jobs arriving `load` times as fast (relative job load, as in Pollux Fig. 8b)."""
    if load <= 0:
        raise InputError(str(workload.path), f"relative load must be positive, got {load}")
    jobs = tuple(
        TraceJob(j.name, j.submit_time / load, j.application, j.num_replicas, j.batch_size,
                j.user, j.team, j.deadline)
        for j in workload.jobs
    )
    return Workload(f"{workload.name}@{load:g}x", workload.path, jobs)

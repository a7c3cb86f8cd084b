"""The batch runner: pairs planned up front, run in worker processes, reported in order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from thrifty.errors import ThriftyError
from thrifty.sim.batch import Outcome, Pair, failures, json_rows, plan_runs, run_pairs
from thrifty.sim.runner import RunSpec

WORKLOAD = ("name,time,application,num_replicas,batch_size\n"
            "a,0,ncf,1,32768\nb,300,cifar10,2,256\nc,600,ncf,2,32768\n")


class Recorder:
    """A progress display that only remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def __enter__(self) -> Recorder:
        self.events.append(("enter",))
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.append(("exit",))

    def start(self, names: list[str], totals: list[int]) -> None:
        self.events.append(("start", list(names), list(totals)))

    def update(self, index: int, done: int, total: int) -> None:
        self.events.append(("update", index, done, total))

    def end(self, index: int, ok: bool) -> None:
        self.events.append(("end", index, ok))


def test_pairs_run_in_order_and_tell_the_progress_display(tmp_path: Path, data_root: Path) -> None:
    workload = tmp_path / "three.csv"
    workload.write_text(WORKLOAD)
    pairs = plan_runs([workload], "pollux64", ["fifo", "tiresias"], data_root)
    assert [(p.spec.policy, p.label, p.jobs) for p in pairs] == [
        ("fifo", "three", 3), ("tiresias", "three", 3)]
    shown = Recorder()
    outcomes = run_pairs(pairs, workers=2, progress=shown)
    assert [o.pair for o in outcomes] == pairs
    assert all(o.summary is not None and o.summary.jobs == 3 for o in outcomes)
    assert shown.events[0] == ("enter",) and shown.events[-1] == ("exit",)
    assert shown.events[1] == ("start", ["fifo · three", "tiresias · three"], [3, 3])
    assert sorted(e for e in shown.events if e[0] == "end") == [("end", 0, True), ("end", 1, True)]
    updates = [e for e in shown.events if e[0] == "update"]
    assert all(0 <= done <= total == 3 for _, _, done, total in updates)
    rows = json_rows(outcomes)
    assert [(r["policy"], r["workload"], r["jobs"]) for r in rows] == [
        ("fifo", "three", 3), ("tiresias", "three", 3)]
    assert failures(outcomes) == []


def test_bad_input_fails_in_the_parent_before_anything_runs(
    tmp_path: Path, data_root: Path
) -> None:
    workload = tmp_path / "w.csv"
    workload.write_text(WORKLOAD + "d,900,ncf,1,lots\n")
    with pytest.raises(ThriftyError, match=r"w\.csv:5"):
        plan_runs([workload], "pollux64", ["fifo"], data_root)


def test_failures_name_the_policy_and_workload(tmp_path: Path) -> None:
    spec = RunSpec(policy="fifo", workload=tmp_path / "w.csv", cluster="pollux64",
                   data_root=tmp_path)
    pair = Pair(spec=spec, label="w", jobs=1)
    outcome = Outcome(pair, None, "profile file not found", 0.0)
    assert failures([outcome]) == ["fifo on w: profile file not found"]
    assert json_rows([outcome]) == []


def test_the_runner_needs_no_command_line_library() -> None:
    code = "import sys, thrifty.sim.batch; sys.exit('typer' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr

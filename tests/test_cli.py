"""The command line: bad input is one line and exit status 2; a real run reports sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thrifty import __version__
from thrifty.cli import app

HEADER = "name,time,application,num_replicas,batch_size\n"
GOOD_ROWS = "a,0,ncf,1,32768\n"

# Ten small jobs of real applications: rigid, so FIFO finishes them in a few simulated hours.
TEN_JOBS = HEADER + "".join(
    f"job-{i},{i * 300},{app},{replicas},{batch}\n"
    for i, (app, replicas, batch) in enumerate(
        [("ncf", 1, 32768), ("cifar10", 2, 256), ("ncf", 2, 32768), ("cifar10", 4, 512),
         ("ncf", 1, 32768), ("cifar10", 1, 128), ("ncf", 4, 65536), ("cifar10", 8, 1024),
         ("ncf", 1, 32768), ("cifar10", 2, 256)]
    )
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit status 2, nothing on stdout, exactly one stderr line holding every fragment."""
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (GOOD_ROWS + "b,soon,ncf,1,32768\n", ("w.csv:3", "field 'time'", "expected a number")),
        (GOOD_ROWS + "b,10,ncf,0,32768\n", ("w.csv:3", "field 'num_replicas'")),
        ("a,10,gpt5,1,128\n", ("w.csv:2", "field 'application'", "unknown application 'gpt5'")),
        (GOOD_ROWS + "a,20,ncf,1,32768\n", ("w.csv:3", "field 'name'", "duplicate")),
    ],
)
def test_malformed_workload_rows(
    tmp_path: Path, data_root: Path, body: str, fragments: tuple[str, ...]
) -> None:
    workload = write(tmp_path, "w.csv", HEADER + body)
    code, out, err = invoke(
        "simulate", workload, "--cluster", "pollux64", "--policy", "fifo", "--data", data_root
    )
    assert_one_line_error(code, out, err, *fragments)


def test_a_bad_file_among_good_ones_stops_everything_before_it_starts(
    tmp_path: Path, data_root: Path
) -> None:
    good = write(tmp_path, "good.csv", HEADER + GOOD_ROWS)
    bad = write(tmp_path, "bad.csv", HEADER + "x,1,ncf,1,big\n")
    code, out, err = invoke(
        "simulate", good, bad, "-c", "pollux64", "-p", "fifo", "--data", data_root
    )
    assert_one_line_error(code, out, err, "bad.csv:2", "field 'batch_size'")


def test_missing_workload_file(tmp_path: Path, data_root: Path) -> None:
    code, out, err = invoke(
        "simulate", tmp_path / "nope.csv", "-c", "pollux64", "-p", "fifo", "--data", data_root
    )
    assert_one_line_error(code, out, err, "nope.csv", "workload file not found")


def test_unknown_policy(tmp_path: Path, data_root: Path) -> None:
    workload = write(tmp_path, "w.csv", HEADER + GOOD_ROWS)
    code, out, err = invoke(
        "simulate", workload, "-c", "pollux64", "-p", "fifo,magic", "--data", data_root
    )
    assert_one_line_error(code, out, err, "unknown policy 'magic'", "fifo")


def test_missing_cluster_file(tmp_path: Path, data_root: Path) -> None:
    workload = write(tmp_path, "w.csv", HEADER + GOOD_ROWS)
    cluster = tmp_path / "lab.toml"
    code, out, err = invoke(
        "simulate", workload, "-c", cluster, "-p", "fifo", "--data", data_root
    )
    assert_one_line_error(code, out, err, "lab.toml", "no such cluster file", "pollux64")


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ('[[nodes]]\nkind = "h100"\ngpus = 8\n', ("c.toml", "unknown GPU kind 'h100'")),
        ('[[nodes]]\nkind = "rtx"\ncount = -1\n', ("c.toml", "field 'nodes[0].count'")),
        ('[[nodes]]\nkind = "rtx"\nram = 4\n', ("c.toml", "field 'nodes[0]'", "ram")),
        ("nodes = [", ("c.toml", "not valid TOML")),
    ],
)
def test_malformed_cluster_toml(
    tmp_path: Path, data_root: Path, toml: str, fragments: tuple[str, ...]
) -> None:
    workload = write(tmp_path, "w.csv", HEADER + GOOD_ROWS)
    cluster = write(tmp_path, "c.toml", toml)
    code, out, err = invoke(
        "simulate", workload, "-c", cluster, "-p", "fifo", "--data", data_root
    )
    assert_one_line_error(code, out, err, *fragments)


def test_missing_profile_file(tmp_path: Path) -> None:
    """A data folder that lists an application but lacks its measurements names the file."""
    data = tmp_path / "data"
    (data / "pollux" / "profiles" / "ncf").mkdir(parents=True)
    workload = write(tmp_path, "w.csv", HEADER + GOOD_ROWS)
    code, out, err = invoke(
        "simulate", workload, "-c", "pollux64", "-p", "fifo", "--data", data
    )
    assert_one_line_error(code, out, err, "ncf", "placements.csv", "profile file not found")


def test_bad_options(tmp_path: Path, data_root: Path) -> None:
    workload = write(tmp_path, "w.csv", HEADER + GOOD_ROWS)
    base = ("simulate", workload, "-c", "pollux64", "-p", "fifo", "--data", data_root)
    assert_one_line_error(*invoke(*base, "--load", "0"), "relative load must be positive")
    assert_one_line_error(*invoke(*base, "--interval", "-5"), "interval must be positive")
    assert_one_line_error(*invoke(*base, "--workers", "0"), "--workers")
    assert_one_line_error(
        *invoke(*base, "--json", workload / "such" / "r.json"), "--json", "w.csv/such"
    )
    assert_one_line_error(
        *invoke("simulate", workload, "-c", "pollux64", "-p", "fifo", "--data", tmp_path),
        "--data",
    )


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"thrifty {__version__}"


def test_a_real_simulation_reports_every_job_in_json_and_table(
    tmp_path: Path, data_root: Path
) -> None:
    """Two small workloads under FIFO, through the installed module in its own process pool."""
    first = write(tmp_path, "ten-a.csv", TEN_JOBS)
    second = write(tmp_path, "more/ten-b.csv", TEN_JOBS.replace(",300,", ",900,"))
    report = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, "-m", "thrifty.cli", "simulate", str(first), str(second.parent),
         "--cluster", "pollux64", "--policy", "fifo", "--workers", "2",
         "--json", str(report), "--data", str(data_root)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads(report.read_text())["runs"]
    assert [(r["workload"], r["policy"], r["cluster"]) for r in runs] == [
        ("ten-a", "fifo", "pollux64"), ("ten-b", "fifo", "pollux64")
    ]
    for run in runs:
        assert run["jobs"] == 10
        assert 0 < run["p50_jct_s"] <= run["p99_jct_s"]
        assert 0 < run["avg_jct_s"] <= run["p99_jct_s"]
        assert run["makespan_s"] >= run["p99_jct_s"] * 0.99
        assert run["gpu_hours"] > 0
        assert run["restarts_per_job"] == 0  # FIFO never moves a running job
        assert run["worst_ftf"] is None or run["worst_ftf"] > 0
        assert 0 <= run["policy_round_median_s"] <= run["policy_round_p95_s"]
        assert run["wall_s"] > 0
    # The table: one row per pair and, with two workloads, the mean per policy.
    assert "ten-a" in done.stdout and "ten-b" in done.stdout and "mean of 2" in done.stdout
    assert "Traceback" not in done.stderr

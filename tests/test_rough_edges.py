"""What a newcomer trips over first: output folders, help texts, piped and narrow tables, the
advisor's deadline, the queue, small amounts, the spec's fields and the solver's chatter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from thrifty.cli import app

WORKLOAD = ("name,time,application,num_replicas,batch_size,user,team\n"
            "a,0,cifar10,2,256,ann,vision\nb,300,ncf,1,32768,bo,nlp\n")


def invoke(*args: object, **kwargs: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], **kwargs)  # type: ignore[arg-type]
    return result.exit_code, result.stdout, result.stderr


# ---- output files in folders that do not exist yet -------------------------------------------


def test_every_output_flag_creates_its_folder(tmp_path: Path, data_root: Path) -> None:
    workload = tmp_path / "w.csv"
    workload.write_text(WORKLOAD)
    out = tmp_path / "results"
    code, _, err = invoke("simulate", workload, "-c", "pollux64", "-p", "fifo", "--workers", "1",
                          "--json", out / "a" / "runs.json", "--ledger", out / "b" / "l.json",
                          "--plot", out / "c" / "runs.png", "--data", data_root)
    assert code == 0, err
    assert json.loads((out / "a" / "runs.json").read_text())["runs"]
    assert (out / "c" / "runs.png").stat().st_size > 1000
    ledger = out / "b" / "l.json"
    code, _, err = invoke("report", ledger, "--csv", out / "d" / "r.csv", "--json",
                          out / "e" / "r.json", "--plot", out / "f" / "spend.png")
    assert code == 0, err
    for made in ("d/r.csv", "e/r.json", "f/spend.png"):
        assert (out / made).stat().st_size > 0, made
    code, _, err = invoke("advise", "--profile", "ncf", "--json", out / "g" / "advice.json",
                          "--data", data_root)
    assert code == 0, err
    assert json.loads((out / "g" / "advice.json").read_text())["options"]
    code, _, err = invoke("workload", "generate", workload, "-c", "pollux64", "--jobs", "5",
                          "--cluster-out", out / "h" / "c.toml", "--workload-out",
                          out / "i" / "w.csv", "--data", data_root)
    assert code == 0, err
    assert (out / "h" / "c.toml").is_file() and (out / "i" / "w.csv").is_file()


def test_an_output_folder_that_cannot_be_made_fails_before_running(
    tmp_path: Path, data_root: Path
) -> None:
    workload = tmp_path / "w.csv"
    workload.write_text(WORKLOAD)
    code, out, err = invoke("simulate", workload, "-c", "pollux64", "-p", "fifo",
                            "--json", workload / "runs.json", "--data", data_root)
    assert code == 2 and out == ""
    assert "--json" in err and "cannot create" in err and len(err.strip().splitlines()) == 1


# ---- help texts ------------------------------------------------------------------------------


def _commands() -> list[tuple[str, ...]]:
    """The path of every command and group, from the click tree typer builds."""
    import typer

    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def test_help_shows_square_brackets_and_no_metavar_on_flags() -> None:
    wide = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}
    paths = _commands()
    assert ("simulate",) in paths and ("workload", "generate") in paths
    for path in paths:
        code, out, err = invoke(*path, "--help", env=wide)
        assert code == 0, (path, err)
        assert "<bool>" not in out, path
    assert "[autoscale] table" in invoke("simulate", "--help", env=wide)[1]
    assert "[[cloud]] offers" in invoke("advise", "--help", env=wide)[1]


# ---- the solver's debug prints ---------------------------------------------------------------


def test_a_simulation_prints_none_of_highs_debug_lines(data_root: Path) -> None:
    """Pollux workload 1 under thrifty's policy: HiGHS printed two such lines before."""
    done = subprocess.run(
        [sys.executable, "-m", "thrifty.cli", "simulate",
         str(data_root / "pollux" / "workloads" / "workload-1.csv"), "-c", "pollux64",
         "-p", "thrifty", "--workers", "1", "--data", str(data_root)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert "thrifty" in done.stdout and "160/160" in done.stderr + done.stdout
    for stream in (done.stdout, done.stderr):
        assert "Highs" not in stream and "tmpSolver" not in stream


def test_quiet_solver_passes_on_everything_but_highs_lines(tmp_path: Path) -> None:
    """What other code writes to descriptor 1 during a solve still arrives, after it."""
    script = (
        "import os\n"
        "from thrifty.policy.solver_output import quiet_solver\n"
        "with quiet_solver():\n"
        "    os.write(1, b'HighsMipSolverData::transformNewIntegerFeasibleSolution x\\n')\n"
        "    print('kept line', flush=True)\n"
        "print('after')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert done.stdout == "kept line\nafter\n"


# ---- small amounts ---------------------------------------------------------------------------


def _render(table: object, width: int = 200) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def test_small_amounts_read_without_exponents() -> None:
    from thrifty.accounting.ledger import SpendRow
    from thrifty.cli.output import fmt_amount, fmt_metric
    from thrifty.cli.tables import report_table

    tiny = SpendRow(key="vision", jobs=1, gpu_hours_by_kind={"aws": 4.36e-07},
                     gpu_hours=4.36e-07, usd=4.36e-07, kwh=1.2e-05, kgco2e=3e-06,
                     restart_gpu_hours=0.0, idle_gpu_hours=0.004, queue_h=0.25)
    text = _render(report_table([tiny], "team", "tiny"))
    assert "e-0" not in text and "<0.01" in text and "0.25" in text
    for fmt in (fmt_amount, fmt_metric):
        assert fmt(4.36e-07) == "<0.01" and fmt(-2e-9) == ">-0.01"
        assert "e" not in fmt(0.00999) and fmt(0) in ("0", "0.00")


# ---- the advisor's deadline ------------------------------------------------------------------


def test_advise_marks_and_separates_options_that_miss_the_deadline(
    tmp_path: Path, data_root: Path
) -> None:
    out_json = tmp_path / "advice.json"
    code, out, err = invoke("advise", "--profile", "imagenet", "--deadline", "3", "--top", "3",
                            "--cpu-slowdown", "30", "--json", out_json, "--data", data_root,
                            env={"COLUMNS": "200"})
    assert code == 0, err
    options = json.loads(out_json.read_text())["options"]
    verdicts = [o["meets_deadline"] for o in options]
    assert verdicts == [o["hours"] <= 3 for o in options]
    assert True in verdicts and False in verdicts
    assert verdicts == sorted(verdicts, reverse=True)  # every option in time comes first
    rows = [line for line in out.splitlines() if "×" in line and "│" in line]
    marks = ["misses" in row for row in rows]
    assert any(marks) and marks == sorted(marks)  # the missing rows shown come after the others
    for row in rows:
        hours = float(row.split("│")[2])
        assert ("misses" in row) == (hours > 3), row
    assert "miss the 3 h deadline" in out
    code, out, err = invoke("advise", "--profile", "imagenet", "--data", data_root)
    assert code == 0 and "misses" not in out


# ---- the job spec in thrifty submit --help ---------------------------------------------------

SPEC_FIELDS = (
    "name", "entrypoint.script", "entrypoint.module", "entrypoint.command", "entrypoint.args",
    "working_dir", "env", "resources.min_replicas", "resources.max_replicas",
    "resources.gpu_kinds", "resources.cpu_only", "mode", "preemptible", "team", "priority",
    "checkpoint_dir", "max_restarts", "batch_size", "deadline_s",
)


def test_submit_help_lists_every_spec_field_with_its_description() -> None:
    from thrifty.cli.spec_help import spec_fields

    fields = dict(spec_fields())
    assert set(SPEC_FIELDS) <= set(fields)
    code, out, err = invoke("submit", "--help", env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert code == 0, err
    lines = out.splitlines()
    for name, text in fields.items():
        assert text, f"{name} has no description in cluster/spec.py"
        line = next((x for x in lines if x.strip().startswith(f"{name} ")), None)
        assert line is not None, name
        assert text.split(" (")[0] in line, (name, line)


# ---- the queue in thrifty cluster ------------------------------------------------------------

HOLD = "import pathlib, sys, time\nwhile not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.05)"


def _wait(check: object, what: str, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_cluster_shows_the_waiting_jobs(tmp_path: Path, monkeypatch: object) -> None:
    from thrifty.cluster.api import ApiServer, create_app
    from thrifty.cluster.local import LocalExecutor
    from thrifty.cluster.plane import ControlPlane
    from thrifty.cluster.spec import validate_spec
    from thrifty.cluster.store import Store

    for var in ("THRIFTY_TOKEN", "THRIFTY_SERVER"):
        monkeypatch.delenv(var, raising=False)  # type: ignore[attr-defined]
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))  # type: ignore[attr-defined]
    store = Store(f"sqlite:///{tmp_path / 'thrifty.db'}")
    admin = store.add_user("admin", admin=True)
    bob = store.add_user("bob")
    plane = ControlPlane(store, LocalExecutor(slots=2), "thrifty", interval_s=0.2, home=tmp_path,
                         stop_grace_s=5.0)
    api = ApiServer(create_app(plane))
    stop = tmp_path / "stop"

    def rigid(name: str, owner: str, replicas: int) -> str:
        spec = validate_spec({"name": name, "mode": "rigid", "preemptible": False,
                              "entrypoint": {"command": [sys.executable, "-c", HOLD, str(stop)]},
                              "resources": {"min_replicas": replicas,
                                            "max_replicas": replicas}}, owner=owner)
        return plane.submit(spec).id

    plane.start()
    api.start()
    try:
        holder = rigid("holder", "admin", 2)
        _wait(lambda: store.get(holder).state == "running", "the first job to start")
        waiting = [rigid("second", "admin", 2), rigid("third", "bob", 1)]
        env = {"THRIFTY_SERVER": api.url, "COLUMNS": "200"}
        code, out, err = invoke("cluster", "--token", admin, env=env)
        assert code == 0, err
        table = out[out.index("Waiting"):]
        for job_id, owner, asked in zip(waiting, ("admin", "bob"), ("2 × any kind (rigid)",
                                                                   "1 × any kind (rigid)"),
                                        strict=True):
            line = next(x for x in table.splitlines() if job_id in x)
            assert owner in line and asked in line and "since" in line
        assert holder not in table
        assert table.index(waiting[0]) < table.index(waiting[1])  # longest waiting first
        code, out, err = invoke("cluster", "--token", bob, env=env)  # a user sees their own
        assert code == 0 and waiting[1] in out and waiting[0] not in out
    finally:
        stop.write_text("")
        api.stop()
        plane.stop(stop_jobs=True)
        store.close()


# ---- tables: piped, and in an 80-column terminal ---------------------------------------------

LONG_NAMES = ("philly-workload-long-name-1", "philly-workload-long-name-2")


def _long_named_workloads(folder: Path) -> list[Path]:
    paths = []
    for name in LONG_NAMES:
        path = folder / f"{name}.csv"
        path.write_text(WORKLOAD)
        paths.append(path)
    return paths


def test_piped_results_keep_every_cell_whole(tmp_path: Path, data_root: Path) -> None:
    code, out, err = invoke("simulate", *_long_named_workloads(tmp_path), "-c", "pollux64",
                            "-p", "fifo,tiresias", "--workers", "1", "--data", data_root)
    assert code == 0, err
    assert "…" not in out
    for name in LONG_NAMES:
        assert sum(name in line for line in out.splitlines()) == 2  # one row per policy
    header = next(line for line in out.splitlines() if "workload" in line)
    assert "round p95 ms" in header and "wall s" in header  # nothing left out when piped


def test_tables_fit_80_columns_without_cutting_names(tmp_path: Path, data_root: Path) -> None:
    from thrifty.accounting.ledger import Ledger
    from thrifty.cli.tables import results_table
    from thrifty.cluster.demo import live_table, summary_table
    from thrifty.sim.batch import plan_runs, run_pairs

    outcomes = run_pairs(plan_runs(_long_named_workloads(tmp_path), "pollux64",
                                   ["fifo", "tiresias"], data_root), 1)
    demo_rows = [{"id": f"j{i}", "name": name, "state": state, "replicas": 2,
                  "batch_size": 1024, "epoch": 1234, "goodput": 123456.7, "restarts": 12,
                  "jct_s": 1234.5, "replica_seconds": 4000.0, "message": ""}
                 for i, (name, state) in enumerate([
                     ("digits-mlp", "succeeded"), ("mnist1d-cnn", "restarting"),
                     ("digits-cnn", "running"), ("tiny-lm", "queued")])]
    tables = {
        "results": results_table(outcomes, title="pollux64", width=80),
        "live": live_table(demo_rows, 123.0, "thrifty", 2),
        "summary": summary_table(demo_rows, Ledger([], [], {"carbon": "DEU"})),
    }
    for what, table in tables.items():
        text = _render(table, width=80)
        assert "…" not in text, (what, text)
        assert max(len(line.rstrip()) for line in text.splitlines()) <= 80, (what, text)
        names = LONG_NAMES if what == "results" else ("mnist1d-cnn", "restarting", "succeeded")
        for name in names:
            assert name in text, (what, name, text)
    assert "left out for the terminal's width" in _render(tables["results"], width=80)


# ---- the live demo shows resizes on any machine ----------------------------------------------


def test_a_shortened_live_demo_resizes_its_jobs(tmp_path: Path) -> None:
    """The demo's jobs train for a share of CPU time, not a number of epochs, so however fast
    the machine, the first job is still running when the second arrives and the policy must
    resize it. A quarter of the demo's arrivals and training times, on two slots."""
    from rich.console import Console

    from thrifty.cluster.demo import run_live_demo
    from thrifty.settings import Settings

    log = tmp_path / "demo.txt"
    with log.open("w") as out:
        rows = run_live_demo(tmp_path / "demo", slots=2, interval_s=1.0, time_scale=0.25,
                             timeout_s=400, console=Console(file=out, width=120),
                             settings=Settings.from_env())
    assert [r["state"] for r in rows] == ["succeeded"] * 4, log.read_text()
    assert sum(r["restarts"] for r in rows) > 0, log.read_text()
    stops = sorted(p.name for p in (tmp_path / "demo" / "stop").iterdir())
    assert stops == sorted(r["name"] for r in rows)  # each ended because the demo said so

"""`thrifty simulate` with costs, `thrifty report` and `thrifty advise`, end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thrifty.cli import app

WORKLOAD = ("name,time,application,num_replicas,batch_size,user,team\n"
            "a,0,cifar10,2,256,ann,vision\nb,300,ncf,1,32768,bo,nlp\n"
            "c,600,cifar10,4,512,ann,vision\n")


def invoke(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize(
    ("option", "text", "fragments"),
    [
        ("--prices", "[onprem.aws]\nusd_per_gpu_hour = -2\n", ("p.toml", "onprem.aws")),
        ("--prices", "[onprem.aws]\naccelerator = 'T4'\n", ("p.toml", "price missing")),
        ("--prices", "[onprem.aws]\naccelerator='TPUv9'\nusd_per_gpu_hour=1\n",
         ("unknown GPU kind 'aws'", "TPUv9")),
        ("--carbon", None, ("unknown carbon region 'mars'", "ger")),
        ("--budgets", "[teams.x]\nusd_per_month = 'lots'\n", ("p.toml", "teams.x.usd_per_month")),
    ],
)
def test_bad_accounting_input_is_one_line_and_status_2(
    tmp_path: Path, data_root: Path, option: str, text: str | None, fragments: tuple[str, ...]
) -> None:
    workload = tmp_path / "w.csv"
    workload.write_text(WORKLOAD)
    value: object = "mars"
    if text is not None:
        value = tmp_path / "p.toml"
        value.write_text(text)
    code, _, err = invoke("simulate", workload, "-c", "pollux64", "-p", "fifo", "--data",
                          data_root, option, value)
    one_line_error(code, err, *fragments)


def test_simulate_reports_costs_against_fifo_and_report_reads_the_ledger(
    tmp_path: Path, data_root: Path
) -> None:
    workload = tmp_path / "w.csv"
    workload.write_text(WORKLOAD)
    ledger, results = tmp_path / "ledger.json", tmp_path / "r.json"
    code, out, err = invoke("simulate", workload, "-c", "pollux64", "-p", "tiresias",
                            "--baseline", "fifo", "--ledger", ledger, "--json", results,
                            "--workers", "1", "--carbon", "fr", "--data", data_root)
    assert code == 0, err
    assert "× fifo" in out and "kg CO2e" in out
    data = json.loads(results.read_text())
    rows = {r["policy"]: r for r in data["runs"]}
    assert set(rows) == {"fifo", "tiresias"}
    for row in rows.values():
        assert row["usd"] > 0 and row["kwh"] > 0 and row["kgco2e"] > 0
        assert row["allocated_gpu_hours"] >= row["gpu_hours"]
    ratio = {r["policy"]: r for r in data["vs_baseline"]}
    assert ratio["fifo"]["usd_ratio"] == 1.0
    assert ratio["tiresias"]["usd_ratio"] == pytest.approx(rows["tiresias"]["usd"]
                                                           / rows["fifo"]["usd"])
    out_csv, out_json, plot = tmp_path / "r.csv", tmp_path / "r2.json", tmp_path / "spend.png"
    code, out, err = invoke("report", ledger, "--by", "team", "--csv", out_csv, "--json",
                            out_json, "--plot", plot)
    assert code == 0, err
    assert "vision" in out and "nlp" in out
    table = list(csv.DictReader(out_csv.open()))
    fifo_total = sum(float(r["usd"]) for r in table if r["run"].startswith("fifo"))
    assert fifo_total == pytest.approx(rows["fifo"]["usd"])
    assert plot.stat().st_size > 1000
    code, out, err = invoke("report", ledger, "--by", "job", "--since", "2d", "--json", out_json)
    assert code == 0 and json.loads(out_json.read_text())["rows"] == []  # all over by then
    code, out, err = invoke("report", ledger, "--by", "job", "--since", "0", "--json", out_json)
    by_job = json.loads(out_json.read_text())["rows"]
    assert {r["key"] for r in by_job} == {"a", "b", "c"}
    one_line_error(*invoke("report", ledger, "--by", "dept")[::2], "--by must be job")
    one_line_error(*invoke("report", tmp_path / "nope.json")[::2], "ledger file not found")


def test_advise_prints_the_recommendation_and_reasons(data_root: Path) -> None:
    code, out, err = invoke("advise", "--profile", "imagenet", "--deadline", "24",
                            "--cpu-slowdown", "30", "--data", data_root)
    assert code == 0, err
    assert "← recommended" in out and "A100" in out and "pays for itself" in out
    code, out, err = invoke("advise", "--data", data_root)
    one_line_error(code, err, "exactly one of --profile")

"""`thrifty tune validate` and `thrifty tune simulate` through the real command."""

from __future__ import annotations

from pathlib import Path

import yaml
from test_tune_spec import GOOD
from typer.testing import CliRunner

from conftest import FIXTURE
from thrifty.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, ["tune", *args])


def test_validate_ok_and_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    result = invoke("validate", str(good))
    assert result.exit_code == 0 and result.output.strip() == "ok"

    bad = tmp_path / "bad.yaml"
    space = {**GOOD["space"], "lr": {"type": "loguniform", "low": 0, "high": 1}}
    bad.write_text(yaml.safe_dump({**GOOD, "space": space, "sampler": {"type": "sobol"}}))
    result = invoke("validate", str(bad))
    assert result.exit_code == 2
    assert "space.lr.low" in result.output and "sampler.type" in result.output


def test_validate_missing_file(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path / "none.yaml"))
    assert result.exit_code == 2 and "no such sweep file" in result.output


def test_simulate_prints_one_table_per_model() -> None:
    result = invoke("simulate", "--curves", str(FIXTURE), "--model", "digits-mlp", "--slots",
                    "8", "--trials", "24", "--seeds", "2")
    assert result.exit_code == 0, result.output
    for word in ("digits-mlp", "random-full", "asha-fixed", "thrifty", "speed-up vs"):
        assert word in result.output


def test_simulate_bad_options_are_one_line() -> None:
    result = invoke("simulate", "--curves", str(FIXTURE), "--strategies", "grid-search")
    assert result.exit_code == 2 and "--strategies" in result.output
    result = invoke("simulate", "--curves", str(FIXTURE), "--model", "resnet")
    assert result.exit_code == 2 and "digits-mlp" in result.output

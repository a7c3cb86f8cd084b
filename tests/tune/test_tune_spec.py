"""The sweep spec: a good one loads; each wrong field is reported at its dotted path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thrifty.errors import ThriftyError
from thrifty.tune.spec import SweepSpecError, load_sweep, parse_sweep, validate_sweep

GOOD = {
    "name": "digits-lr",
    "job": {"name": "digits", "entrypoint": {"script": "train.py"}},
    "space": {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
        "batch_size": {"type": "categorical", "choices": [16, 64, 256]},
        "width": {"type": "int", "low": 16, "high": 256, "step": 16},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    },
    "metric": "accuracy",
    "mode": "max",
    "budget": {"trials": 64, "wall_s": 3600},
    "target": 0.97,
    "sampler": {"type": "tpe", "seed": 3},
    "stopping": {"type": "asha", "grace_epochs": 1, "reduction_factor": 3, "max_epochs": 27},
    "max_concurrent": 8,
}


def problems(data) -> dict[str, str]:
    with pytest.raises(SweepSpecError) as info:
        validate_sweep(data)
    return dict(info.value.problems)


def with_param(name: str, param: dict) -> dict:
    return {**GOOD, "space": {**GOOD["space"], name: param}}


def test_good_spec_loads_with_defaults() -> None:
    spec = validate_sweep(GOOD)
    assert spec.stopping.rungs() == [1, 3, 9, 27]
    assert spec.rung_weight == 1.0
    assert spec.space["width"].grid() == list(range(16, 257, 16))
    assert spec.grid_size() is None  # lr and dropout are continuous


def test_low_above_high_is_named() -> None:
    found = problems(with_param("lr", {"type": "uniform", "low": 0.5, "high": 0.1}))
    assert list(found) == ["space.lr.low"]
    assert "swap" in found["space.lr.low"]


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_log_range_must_be_positive(low: float) -> None:
    found = problems(with_param("lr", {"type": "loguniform", "low": low, "high": 1.0}))
    assert "positive" in found["space.lr.low"]


def test_empty_choices_named() -> None:
    found = problems(with_param("batch_size", {"type": "categorical", "choices": []}))
    assert "at least one choice" in found["space.batch_size.choices"]


def test_unknown_param_type_named() -> None:
    assert "space.lr.type" in problems(with_param("lr", {"type": "normal", "low": 0, "high": 1}))


def test_unknown_sampler_and_stopping_named_together() -> None:
    found = problems({**GOOD, "sampler": {"type": "sobol"},
                      "stopping": {"type": "bandit", "max_epochs": 3}})
    assert "sampler.type" in found
    assert "unknown type 'bandit'" in found["stopping"]


def test_numeric_param_needs_bounds_and_int_needs_whole_numbers() -> None:
    found = problems(with_param("width", {"type": "int", "low": 1.5, "high": 8}))
    assert "whole number" in found["space.width.low"]
    found = problems(with_param("dropout", {"type": "uniform", "high": 0.5}))
    assert "needs low" in found["space.dropout.low"]


def test_misspelt_and_missing_fields_named() -> None:
    data = {k: v for k, v in GOOD.items() if k != "metric"}
    found = problems({**data, "budgett": {"trials": 1}})
    assert "metric" in found and "budgett" in found


def test_bad_budget_and_grace_named() -> None:
    found = problems({**GOOD, "budget": {"trials": 0},
                      "stopping": {"type": "asha", "grace_epochs": 9, "max_epochs": 3}})
    assert "budget.trials" in found
    assert "grace_epochs" in found["stopping.asha"]


def test_grid_sampler_needs_finite_space() -> None:
    found = problems({**GOOD, "sampler": {"type": "grid"}})
    assert set(found) == {"space.lr", "space.dropout"}


def test_job_must_be_a_mapping() -> None:
    assert "job" in problems({**GOOD, "job": "train.py"})


def test_load_sweep_yaml_and_json(tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(GOOD))
    assert load_sweep(path).name == "digits-lr"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: [\n")
    with pytest.raises(SweepSpecError, match="not valid YAML"):
        load_sweep(bad)
    with pytest.raises(ThriftyError, match="no such sweep file"):
        load_sweep(tmp_path / "missing.yaml")


def test_parse_sweep_rejects_non_mapping() -> None:
    with pytest.raises(SweepSpecError, match="expected a mapping"):
        parse_sweep("- 1\n- 2\n")

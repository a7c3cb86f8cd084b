"""The recorded learning curves: the shipped file's shape, and every malformed cell named."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from statistics import median

import pytest

from thrifty.errors import InputError, ThriftyError
from thrifty.tune.curves import HEADER, MODELS, Config, CurveSet, load_curves, parse_curves

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src" / "thrifty" / "tune" / "data" / "curves.csv"
EPOCHS = {"digits-mlp": 12, "digits-cnn": 12, "mnist1d-cnn": 10}


@pytest.fixture(scope="module")
def shipped() -> CurveSet:
    return load_curves()


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_file_is_small_and_has_every_model(shipped: CurveSet) -> None:
    assert SHIPPED.stat().st_size <= 2_000_000
    assert shipped.models() == MODELS
    assert len(shipped.configs()) >= 150
    for model in MODELS:
        assert len(shipped.configs(model)) >= 40, model


def test_every_curve_is_complete_with_two_seeds(shipped: CurveSet) -> None:
    for model in MODELS:
        assert shipped.epochs(model) == EPOCHS[model]
    for config in shipped.configs():
        assert shipped.seeds(config) == (0, 1), config.label()
        for curve in shipped.curves_of(config):
            assert curve.epochs == EPOCHS[config.model]
            assert all(0.0 <= a <= 1.0 for a in curve.accuracy)
            assert all(s > 0 for s in curve.epoch_s)
            assert all(loss >= 0 for loss in curve.loss)
            assert len(set(curve.samples)) == 1 and curve.samples[0] > 0


def test_each_model_has_good_and_bad_configurations(shipped: CurveSet) -> None:
    for model in MODELS:
        finals = [shipped.final_accuracy(c) for c in shipped.configs(model)]
        assert shipped.best_final_accuracy(model) == max(finals) >= 0.9, model
        assert shipped.median_final_accuracy(model) == median(finals)
        low = sum(f < 0.5 for f in finals)
        assert low >= len(finals) // 10, (model, low)  # many configurations stay low
        assert max(finals) - min(finals) >= 0.6, model
    assert shipped.best_final_accuracy() == max(
        shipped.best_final_accuracy(m) for m in MODELS
    )


def test_seeds_differ_but_a_configuration_is_a_function_of_its_seed(shipped: CurveSet) -> None:
    # Two seeds of one configuration are two runs, not one run copied.
    differing = sum(
        shipped.curves_of(c)[0].accuracy != shipped.curves_of(c)[1].accuracy
        for c in shipped.configs()
    )
    assert differing >= len(shipped.configs()) // 2


def test_lookups_and_elapsed_seconds(shipped: CurveSet) -> None:
    config = shipped.configs("mnist1d-cnn")[0]
    curve = shipped.curve(config, 1)
    assert curve.config == config and curve.seed == 1
    assert curve.accuracy_at(1) == curve.accuracy[0]
    assert curve.accuracy_at(curve.epochs) == curve.final_accuracy
    elapsed = curve.elapsed_s
    assert all(b > a for a, b in itertools.pairwise(elapsed))
    assert curve.elapsed_s_at(curve.epochs) == pytest.approx(sum(curve.epoch_s))
    assert curve.elapsed_s_at(3) == pytest.approx(elapsed[2])
    with pytest.raises(ThriftyError, match=r"epochs 1\.\.10"):
        curve.accuracy_at(11)
    with pytest.raises(ThriftyError, match=r"recorded seeds: \[0, 1\]"):
        shipped.curve(config, 7)
    absent = Config("digits-mlp", 0.5, 7, 3, 0.0)
    with pytest.raises(ThriftyError, match="absent"):
        shipped.curve(absent, 0)
    with pytest.raises(ThriftyError, match="no curves of model"):
        shipped.of_model("resnet")
    assert set(shipped.of_model("digits-cnn").configs()) == set(shipped.configs("digits-cnn"))


def test_a_fresh_recording_reads_back() -> None:
    """The recorder and the reader agree on the format: record one short real run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tune_record_curves as recorder
    finally:
        sys.path.pop(0)
    config = recorder.Config("digits-mlp", 0.0605, 256, 32, 1e-4)
    rows = recorder.record(config, seed=3, epochs=2)
    text = ",".join(recorder.HEADER) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    curves = parse_curves(text, "fresh.csv")
    (curve,) = curves.curves
    assert curve.config == Config("digits-mlp", 0.0605, 256, 32, 0.0001)
    assert curve.seed == 3 and curve.epochs == 2
    assert curve.samples == (1500, 1500)
    assert curve.accuracy[1] > 0.2  # two epochs at a sound learning rate beat guessing


# --- malformed files -------------------------------------------------------------------------


def _row(epoch: int, *, seed: int = 0, model: str = "digits-mlp", **cells: str) -> list[str]:
    values = {
        "model": model, "lr": "0.01", "batch_size": "64", "width": "32", "weight_decay": "0",
        "seed": str(seed), "epoch": str(epoch), "accuracy": "0.5", "loss": "1.2",
        "epoch_s": "0.05", "samples": "1500",
    }
    values.update(cells)
    return [values[h] for h in HEADER]


def _csv(rows: list[list[str]], header: str = ",".join(HEADER)) -> str:
    return header + "\n" + "".join(",".join(r) + "\n" for r in rows)


def _good() -> list[list[str]]:
    return [_row(e, seed=s) for s in (0, 1) for e in (1, 2, 3)]


def test_a_valid_snippet_parses() -> None:
    rows = _good()
    rows[4] = _row(2, seed=1, loss="inf")  # a diverged epoch is recorded, not dropped
    curves = parse_curves(_csv(rows), "ok.csv")
    assert len(curves) == 2
    assert curves.curve(curves.configs()[0], 1).loss[1] == float("inf")


def _edit(line: int, **cells: str) -> list[list[str]]:
    """The good rows with cells of data line `line` (2 = first data row) replaced."""
    rows = _good()
    for name, value in cells.items():
        rows[line - 2][HEADER.index(name)] = value
    return rows


MALFORMED = [
    ("model", 2, "model (column 1)", "unknown model", {"model": "resnet"}),
    ("lr", 3, "lr (column 2)", "above 0", {"lr": "0"}),
    ("batch size", 4, "batch_size (column 3)", "whole number", {"batch_size": "16.5"}),
    ("width", 5, "width (column 4)", "at least 1", {"width": "0"}),
    ("weight decay", 6, "weight_decay (column 5)", "at least 0", {"weight_decay": "-1e-4"}),
    ("seed", 7, "seed (column 6)", "whole number", {"seed": "one"}),
    ("accuracy", 3, "accuracy (column 8)", "between 0 and 1", {"accuracy": "1.2"}),
    ("accuracy text", 2, "accuracy (column 8)", "expected a number", {"accuracy": "high"}),
    ("loss", 4, "loss (column 9)", "not NaN", {"loss": "nan"}),
    ("epoch_s", 5, "epoch_s (column 10)", "above 0", {"epoch_s": "0"}),
    ("samples", 6, "samples (column 11)", "at least 1", {"samples": "0"}),
]


@pytest.mark.parametrize(("what", "line", "column", "phrase", "cells"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_a_bad_cell_names_its_line_and_column(
    what: str, line: int, column: str, phrase: str, cells: dict[str, str]
) -> None:
    with pytest.raises(InputError, match=phrase) as err:
        parse_curves(_csv(_edit(line, **cells)), "bad.csv")
    assert err.value.line == line
    assert str(err.value).startswith(f"bad.csv:{line}: field '{column}'")


def test_a_row_with_too_few_columns() -> None:
    rows = _good()
    rows[2] = rows[2][:-1]
    with pytest.raises(InputError, match="has 10 columns, expected 11") as err:
        parse_curves(_csv(rows), "bad.csv")
    assert err.value.line == 4


def test_a_wrong_header_names_the_column() -> None:
    header = ",".join(HEADER).replace("weight_decay", "wd")
    with pytest.raises(InputError, match="header column 5 is 'wd'") as err:
        parse_curves(_csv(_good(), header), "bad.csv")
    assert err.value.line == 1 and err.value.field == "weight_decay (column 5)"
    with pytest.raises(InputError, match="lacks columns") as err:
        parse_curves(_csv(_good(), ",".join(HEADER[:-1])), "bad.csv")
    assert err.value.field == "samples (column 11)"
    with pytest.raises(InputError, match="extra columns"):
        parse_curves(_csv(_good(), ",".join(HEADER) + ",note"), "bad.csv")


def test_a_repeated_epoch_names_both_lines() -> None:
    rows = _good()
    rows[2] = _row(2)  # line 4 repeats line 3's epoch 2
    with pytest.raises(InputError, match=r"epoch 2 .* appears twice \(first on line 3\)") as err:
        parse_curves(_csv(rows), "bad.csv")
    assert err.value.line == 4 and err.value.field == "epoch (column 7)"


def test_a_missing_epoch_names_the_curve() -> None:
    rows = [r for r in _good() if not (r[5] == "1" and r[6] == "2")]
    with pytest.raises(InputError, match=r"seed 1 .* lacks epochs \[2\]") as err:
        parse_curves(_csv(rows), "bad.csv")
    assert err.value.line == 5 and err.value.field == "epoch (column 7)"


def test_curves_of_one_model_must_run_the_same_epochs() -> None:
    rows = _good()[:-1]  # seed 1 stops at epoch 2
    with pytest.raises(InputError, match=r"has 2 epochs but .* has 3") as err:
        parse_curves(_csv(rows), "bad.csv")
    assert err.value.line == 5
    # Another model may run for other epochs.
    other = [_row(e, model="mnist1d-cnn", samples="8000") for e in (1, 2)]
    assert parse_curves(_csv(_good() + other)).epochs("mnist1d-cnn") == 2


def test_empty_files_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty"):
        parse_curves("", "bad.csv")
    with pytest.raises(InputError, match="no curves") as err:
        parse_curves(",".join(HEADER) + "\n", "bad.csv")
    assert err.value.line == 2
    with pytest.raises(InputError, match="cannot read"):
        load_curves(tmp_path / "none.csv")
    path = tmp_path / "mine.csv"
    path.write_text(_csv(_good()))
    assert len(load_curves(path)) == 2

"""Curves for the sweep tests: the small recorded fixture, and in-memory sets whose shape a test
needs (a compute-bound model whose trials gain from more replicas)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from tune_toys import compute_bound_curves

from thrifty.tune.curves import CurveSet, load_curves

FIXTURE = Path(__file__).parent / "fixtures" / "small_curves.csv"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def small_curves() -> CurveSet:
    """Real curves: an MLP on the digits, 3 learning rates × 2 batch sizes × 2 widths × 2 seeds."""
    return load_curves(FIXTURE)


@pytest.fixture(scope="session")
def toy_curves() -> CurveSet:
    return compute_bound_curves()

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty.errors import ThriftyError
from thrifty.goodput import (
    StepObservation,
    ThroughputParams,
    compute_time,
    fit_throughput,
    step_time,
    sync_time,
)

TRUE = ThroughputParams(
    alpha_c=0.04, beta_c=0.002, alpha_r=0.03, beta_r=0.004, alpha_n=0.12, beta_n=0.02, gamma=1.3
)
CONFIGS = [
    (1, 1), (1, 2), (1, 3), (1, 4), (1, 6), (1, 8), (2, 8), (2, 16), (4, 16), (3, 12), (8, 32)
]


def observe(
    params: ThroughputParams, noise: float, seed: int, repeats: int = 3
) -> list[StepObservation]:
    """Step times as a profiler reports them, each configuration measured `repeats` times: the
    sync time is what the step spends beyond computing, so step − sync is the compute time."""
    rng = np.random.default_rng(seed)
    out = []
    for nodes, replicas in CONFIGS * repeats:
        for bsz in (16, 32, 64, 128, 256):
            step = float(step_time(params, nodes, replicas, bsz)) * rng.normal(1, noise)
            compute = float(compute_time(params, bsz)) * rng.normal(1, noise)
            out.append(StepObservation(nodes, replicas, bsz, step, max(step - compute, 0.0)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_known_parameters_from_noisy_observations(seed: int) -> None:
    fitted = fit_throughput(observe(TRUE, noise=0.01, seed=seed))
    for name, true, got in zip(
        ("alpha_c", "beta_c", "alpha_r", "beta_r", "alpha_n", "beta_n", "gamma"),
        TRUE.as_array(),
        fitted.as_array(),
        strict=True,
    ):
        assert got == pytest.approx(true, rel=0.05), name


def test_fit_predicts_an_unseen_placement() -> None:
    fitted = fit_throughput(observe(TRUE, noise=0.01, seed=6))
    for nodes, replicas, bsz in [(6, 24, 48), (1, 6, 100), (16, 64, 32)]:
        assert step_time(fitted, nodes, replicas, bsz) == pytest.approx(
            step_time(TRUE, nodes, replicas, bsz), rel=0.05
        )


def test_untried_multi_node_placements_are_assumed_slower_than_one_node() -> None:
    single_node = [o for o in observe(TRUE, 0.0, 3) if o.num_nodes == 1]
    fitted = fit_throughput(single_node)
    assert fitted.alpha_n >= 1.1 * fitted.alpha_r * 0.999
    assert sync_time(fitted, 2, 8) > sync_time(fitted, 1, 8)


def test_one_gpu_one_batch_still_gives_a_usable_model() -> None:
    fitted = fit_throughput([StepObservation(1, 1, 32, 0.1, 0.0)])
    assert step_time(fitted, 1, 1, 32) == pytest.approx(0.1, rel=0.01)
    assert step_time(fitted, 1, 1, 64) > step_time(fitted, 1, 1, 32)


def test_bad_observations_are_rejected() -> None:
    with pytest.raises(ThriftyError):
        fit_throughput([])
    with pytest.raises(ThriftyError, match="sync"):
        fit_throughput([StepObservation(1, 2, 32, 0.1, 0.2)])


@settings(max_examples=60, deadline=None)
@given(
    bsz=st.integers(1, 4096),
    replicas=st.integers(1, 128),
    accum=st.integers(0, 8),
)
def test_step_time_grows_with_batch_replicas_and_accumulation(
    bsz: int, replicas: int, accum: int
) -> None:
    nodes = max(1, replicas // 4)
    base = step_time(TRUE, nodes, replicas, bsz, accum)
    assert step_time(TRUE, nodes, replicas, bsz + 1, accum) > base
    assert step_time(TRUE, nodes, replicas, bsz, accum + 1) > base
    assert step_time(TRUE, max(1, (replicas + 1) // 4), replicas + 1, bsz, accum) >= base - 1e-12
    # Overlap never makes a step shorter than its compute or its synchronisation alone.
    grad = compute_time(TRUE, bsz)
    assert base >= accum * grad + max(grad, sync_time(TRUE, nodes, replicas)) - 1e-12


def test_params_round_trip_and_validate() -> None:
    assert ThroughputParams.from_dict(TRUE.to_dict()) == TRUE
    with pytest.raises(ThriftyError, match="gamma"):
        ThroughputParams.from_dict({**TRUE.to_dict(), "gamma": 0.5})
    with pytest.raises(ThriftyError, match="beta_n"):
        ThroughputParams.from_dict({k: v for k, v in TRUE.to_dict().items() if k != "beta_n"})

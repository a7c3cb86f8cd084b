"""Simulated sweeps: slot accounting, each strategy's behaviour, determinism, the comparison."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from tune_toys import compute_bound_curves

from thrifty.errors import ThriftyError
from thrifty.tune.compare import TARGET_MARGIN, compare, parse_strategies
from thrifty.tune.curves import Config
from thrifty.tune.simulate import (
    STRATEGIES,
    ConfigSpace,
    SimSettings,
    max_epochs_of,
    simulate,
)
from thrifty.tune.speedup import SpeedupTable

TOY = SimSettings(model="toy", slots=16, trials=16, seed=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_never_more_slots_in_use_than_exist(toy_curves, strategy) -> None:
    for slots in (3, 16):
        result = simulate(toy_curves, strategy, replace(TOY, slots=slots, trials=24))
        assert result.peak_slots <= slots
        assert result.total_slot_hours <= slots * result.makespan_s / 3600 + 1e-9


def test_thrifty_fills_idle_slots(toy_curves) -> None:
    asha = simulate(toy_curves, "asha-fixed", TOY)
    thrifty = simulate(toy_curves, "thrifty", TOY)
    assert thrifty.peak_slots == TOY.slots
    # one slot per trial: once trials are pruned, asha-fixed leaves slots idle, thrifty does not
    assert thrifty.total_slot_hours / thrifty.makespan_s > asha.total_slot_hours / asha.makespan_s


def test_random_full_runs_every_trial_to_the_end(small_curves) -> None:
    settings = SimSettings(model="digits-mlp", slots=8, trials=20, seed=2)
    result = simulate(small_curves, "random-full", settings)
    epochs = max_epochs_of(small_curves, "digits-mlp")
    assert result.trial_epochs == (epochs,) * 20
    assert (result.started, result.completed, result.pruned) == (20, 20, 0)


def test_asha_prunes_and_saves_slot_hours(small_curves) -> None:
    settings = SimSettings(model="digits-mlp", slots=8, trials=40, seed=1)
    full = simulate(small_curves, "random-full", settings)
    asha = simulate(small_curves, "asha-fixed", settings)
    assert asha.pruned > 0 and min(asha.trial_epochs) == 1
    assert asha.started == 40 and asha.pruned + asha.completed == 40
    assert asha.total_slot_hours < full.total_slot_hours


def test_thrifty_beats_asha_fixed_where_allocation_matters(toy_curves) -> None:
    for seed in (0, 1, 2):
        settings = replace(TOY, seed=seed)
        target = simulate(toy_curves, "random-full", settings).best - TARGET_MARGIN
        asha_s = simulate(toy_curves, "asha-fixed", settings).to_target(target)[0]
        thrifty_s = simulate(toy_curves, "thrifty", settings).to_target(target)[0]
        assert thrifty_s < 0.8 * asha_s, seed


def test_a_restart_that_costs_more_than_it_saves_is_not_made(toy_curves) -> None:
    slow = replace(TOY, restart_s=10_000.0)
    asha = simulate(toy_curves, "asha-fixed", slow)
    thrifty = simulate(toy_curves, "thrifty", slow)
    assert thrifty.improvements == asha.improvements
    assert thrifty.total_slot_hours == pytest.approx(asha.total_slot_hours)


def test_deterministic_given_seed(small_curves) -> None:
    settings = SimSettings(model="digits-mlp", slots=8, trials=30, seed=4)
    for strategy in STRATEGIES:
        assert simulate(small_curves, strategy, settings) == \
            simulate(small_curves, strategy, settings)
    other = simulate(small_curves, "asha-fixed", replace(settings, seed=5))
    assert other.trial_epochs != simulate(small_curves, "asha-fixed", settings).trial_epochs


def test_speedup_fit_recovers_compute_terms_and_stays_below_k() -> None:
    table = SpeedupTable(compute_bound_curves(), "toy")
    model = table.models[64]
    assert model.params.alpha_c == pytest.approx(0.001, rel=0.01)
    assert model.params.beta_c == pytest.approx(0.001, rel=0.01)
    for k in (2, 4, 8, 16, 64):
        assert 1.0 < model.speedup(k, 256) < k
    assert model.useful_replicas(64, 1000) == 16  # 4 samples per replica at least


def test_step_overhead_bound_trials_gain_nothing(small_curves) -> None:
    """The recorded digits MLP spends its steps in per-step overhead: replicas do not help."""
    table = SpeedupTable(small_curves, "digits-mlp")
    for model in table.models.values():
        assert model.useful_replicas(16, 64) == 1


def test_config_space_maps_to_nearest_recorded(small_curves) -> None:
    space = ConfigSpace(small_curves, "digits-mlp")
    assert space.values["batch_size"] == [16, 128]
    exact = Config("digits-mlp", 0.03, 16, 128, 0.0)
    assert space.nearest(exact.as_params()) == exact


def test_compare_sets_targets_from_random_full(small_curves) -> None:
    settings = SimSettings(model="digits-mlp", slots=8, trials=24)
    result = compare(small_curves, settings, [0, 1], ["asha-fixed", "thrifty"])
    assert [s.strategy for s in result.summaries] == ["asha-fixed", "thrifty"]
    full = [simulate(small_curves, "random-full", replace(settings, seed=s)) for s in (0, 1)]
    assert result.targets == tuple(r.best - TARGET_MARGIN for r in full)
    for summary in result.summaries:
        assert summary.vs_random is not None and summary.vs_random > 0
        assert summary.vs_asha is not None
    assert result.summaries[0].vs_asha == 1.0
    strict = compare(small_curves, settings, [0], ["random-full"], margin=0.0)
    assert strict.targets == (full[0].best,)
    assert strict.summaries[0].reached == 1


def test_to_target_is_infinite_when_never_reached(small_curves) -> None:
    result = simulate(small_curves, "asha-fixed", SimSettings(model="digits-mlp", slots=4,
                                                              trials=8))
    assert result.to_target(2.0) == (math.inf, math.inf)


def test_bad_inputs_are_named(small_curves) -> None:
    with pytest.raises(ThriftyError, match="--strategies"):
        parse_strategies("random-full,bohb")
    with pytest.raises(ThriftyError, match="no curves for model 'resnet'"):
        simulate(small_curves, "thrifty", SimSettings(model="resnet"))

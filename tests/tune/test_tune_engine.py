"""The engine's decisions with real Optuna samplers and pruners."""

from __future__ import annotations

import pytest

from thrifty.errors import ThriftyError
from thrifty.tune.engine import Sweep
from thrifty.tune.spec import validate_sweep


def sweep(**changes) -> Sweep:
    data = {
        "name": "engine-test", "job": {}, "metric": "accuracy", "mode": "max",
        "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
        "budget": {"trials": 50}, "sampler": {"type": "random", "seed": 0},
        "stopping": {"type": "asha", "grace_epochs": 1, "reduction_factor": 3, "max_epochs": 9},
        "max_concurrent": 50,
    }
    data.update(changes)
    return Sweep(validate_sweep(data))


def run_rung_one(s: Sweep, values: list[float]) -> list:
    """Start one trial per value and report epoch 1 of each, in order."""
    trials = [s.suggest() for _ in values]
    return [s.report(t.id, 1, v, 10.0) for t, v in zip(trials, values, strict=True)]


def test_bad_trial_is_pruned_at_its_rung_and_good_one_continues() -> None:
    s = sweep()
    decisions = run_rung_one(s, [0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.10, 0.99])
    bad, good = decisions[6], decisions[7]
    assert bad.action == "prune" and bad.rung == 1
    assert "rung 1" in bad.reason
    assert good.action == "continue" and good.rung == 1
    assert s.trial(6).state == "pruned"
    assert s.status().pruned >= 1


def test_trial_reaching_max_epochs_completes() -> None:
    s = sweep(stopping={"type": "none", "max_epochs": 3})
    t = s.suggest()
    assert [s.report(t.id, e, 0.1 * e, 5.0 * e).action for e in (1, 2, 3)] == \
        ["continue", "continue", "complete"]
    assert s.best().id == t.id and s.best().best == pytest.approx(0.3)
    assert s.status().completed == 1
    assert s.study.trials[0].value == pytest.approx(0.3)


def test_trial_budget_stops_suggesting_after_n() -> None:
    s = sweep(budget={"trials": 4})
    trials = [s.suggest() for _ in range(4)]
    assert all(t is not None for t in trials)
    assert len({t.id for t in trials}) == 4
    assert s.suggest() is None
    assert "4 trials" in s.stopped
    # running trials still finish after the trial budget is spent
    assert s.report(trials[0].id, 1, 0.5, 1.0).action == "continue"


def test_max_concurrent_holds_back_without_stopping() -> None:
    s = sweep(max_concurrent=2)
    first, _ = s.suggest(), s.suggest()
    assert s.suggest() is None and s.stopped is None
    s.fail(first.id, "node lost")
    assert s.suggest() is not None
    assert s.status().failed == 1


def test_target_stops_the_sweep() -> None:
    s = sweep(target=0.8)
    a, b = s.suggest(), s.suggest()
    assert s.report(a.id, 1, 0.85, 3.0).action == "complete"
    assert "target" in s.stopped
    assert s.suggest() is None
    assert s.report(b.id, 1, 0.5, 3.0).action == "stop"
    assert s.trial(b.id).state == "stopped"


def test_min_mode_target_and_best() -> None:
    s = sweep(mode="min", target=0.1, stopping={"type": "none", "max_epochs": 5})
    a, b = s.suggest(), s.suggest()
    s.report(a.id, 1, 0.5, 1.0)
    assert s.report(b.id, 1, 0.05, 1.0).action == "complete"
    assert s.best().id == b.id


def test_grid_sampler_exhausts_every_configuration_once() -> None:
    s = sweep(space={"a": {"type": "int", "low": 1, "high": 3},
                     "b": {"type": "categorical", "choices": ["sgd", "adam"]}},
              sampler={"type": "grid", "seed": 1})
    trials = []
    while (t := s.suggest()) is not None:
        trials.append(t)
    assert sorted((t.params["a"], t.params["b"]) for t in trials) == \
        [(a, b) for a in (1, 2, 3) for b in ("adam", "sgd")]
    assert "grid of 6" in s.stopped


def test_slot_hour_budget_stops_running_trials() -> None:
    s = sweep(budget={"trials": 10, "gpu_hours": 1.0})
    t = s.suggest()
    assert s.report(t.id, 1, 0.5, 1800.0, slot_s=3600.0).action == "stop"
    assert s.suggest() is None and "slot-hours" in s.stopped


def test_wall_budget_uses_the_clock_passed_in() -> None:
    s = sweep(budget={"trials": 10, "wall_s": 60})
    assert s.suggest(now_s=10.0) is not None
    assert s.suggest(now_s=61.0) is None


def test_usd_budget_needs_a_price() -> None:
    with pytest.raises(ThriftyError, match="usd_per_slot_hour"):
        sweep(budget={"trials": 3, "usd": 5.0})


def test_median_pruner_prunes_below_the_median_of_finished_trials() -> None:
    s = sweep(stopping={"type": "median", "max_epochs": 3, "warmup_epochs": 0,
                        "startup_trials": 3})
    for _ in range(3):
        t = s.suggest()
        assert [s.report(t.id, e, 0.9, e).action for e in (1, 2, 3)][-1] == "complete"
    loser, winner = s.suggest(), s.suggest()
    assert s.report(loser.id, 1, 0.2, 1.0).action == "prune"
    assert s.report(winner.id, 1, 0.95, 1.0).action == "continue"


def test_hyperband_prunes_losers_and_keeps_the_best() -> None:
    s = sweep(stopping={"type": "hyperband", "max_epochs": 9, "grace_epochs": 1,
                        "reduction_factor": 3})
    quality = {}
    for i in range(27):
        t = s.suggest()
        quality[t.id] = (i * 7 % 27) / 27  # a fixed value per trial, in a scrambled order
    alive = set(quality)
    for epoch in range(1, 10):
        for trial_id in sorted(alive):
            if s.report(trial_id, epoch, quality[trial_id], epoch).action != "continue":
                alive.discard(trial_id)
    states = {t.id: t.state for t in s.status().trials}
    pruned = [i for i, state in states.items() if state == "pruned"]
    kept = [i for i in quality if i not in pruned]
    assert len(pruned) >= 9
    assert sum(quality[i] for i in pruned) / len(pruned) < \
        sum(quality[i] for i in kept) / len(kept) - 0.2
    assert states[max(quality, key=quality.get)] == "completed"


def test_non_finite_metric_prunes_and_reports_are_checked() -> None:
    s = sweep()
    t = s.suggest()
    assert s.report(t.id, 1, float("nan"), 1.0).action == "prune"
    with pytest.raises(ThriftyError, match="already ended"):
        s.report(t.id, 2, 0.5, 2.0)
    u = s.suggest()
    s.report(u.id, 1, 0.5, 1.0)
    with pytest.raises(ThriftyError, match="in order"):
        s.report(u.id, 1, 0.6, 1.0)
    with pytest.raises(ThriftyError, match="no trial 999"):
        s.report(999, 1, 0.6, 1.0)


def test_finish_completes_with_last_value() -> None:
    s = sweep()
    t = s.suggest()
    s.report(t.id, 1, 0.7, 1.0)
    s.finish(t.id)
    assert s.trial(t.id).state == "completed"
    status = s.status()
    assert status.completed == 1 and status.best == pytest.approx(0.7)


def test_sqlalchemy_storage(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    s = Sweep(validate_sweep({
        "name": "stored", "job": {}, "metric": "accuracy",
        "space": {"x": {"type": "int", "low": 0, "high": 9}}, "budget": {"trials": 2},
        "stopping": {"type": "none", "max_epochs": 1},
    }), storage=url)
    t = s.suggest()
    assert s.report(t.id, 1, 0.4, 1.0).action == "complete"
    import optuna

    stored = optuna.load_study(study_name="stored", storage=url)
    assert stored.trials[0].value == pytest.approx(0.4)

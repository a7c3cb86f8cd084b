"""`ModelOracle` answers the oracle's questions from a job's model, and the policies that need
an oracle declare it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from thrifty.accounting.carbon import StaticIntensity
from thrifty.goodput import (
    BatchLimits,
    GoodputModel,
    GradientStats,
    ThroughputParams,
    gain,
    split_batch,
    throughput,
)
from thrifty.policy.base import BasePolicy, ClusterView, JobView, NodeView, PolicyWrapper
from thrifty.policy.budgeted import MeteredPolicy
from thrifty.policy.carbon_aware import CarbonAwarePolicy
from thrifty.policy.optimus import OptimusPolicy
from thrifty.policy.oracle import ModelOracle
from thrifty.policy.registry import POLICIES, make_policy

LIMITS = BatchLimits(init_batch_size=128, max_batch_size=8192, min_local_bsz=16, max_local_bsz=256)
PARAMS = ThroughputParams(0.05, 0.002, 0.01, 0.0005, 0.02, 0.001, 2.0)
GRAD = GradientStats(1.0, 200.0)


def model(progress: float = 0.0, target: float | None = 1000.0) -> GoodputModel:
    return GoodputModel({"t4": PARAMS}, GRAD, LIMITS, progress=progress, target_progress=target)


@pytest.mark.parametrize(("placement", "batch"), [((1,), 128), ((4,), 1024), ((4, 4), 4096),
                                                  ((2,), 2000), ((1,), 1024)])
def test_step_seconds_agree_with_the_throughput_model(placement: tuple[int, ...],
                                                      batch: int) -> None:
    oracle = ModelOracle(model())
    seconds = oracle.step_seconds("t4", placement, batch)
    replicas = sum(placement)
    atomic, accum = split_batch(batch, replicas, LIMITS.init_batch_size, LIMITS.local_cap)
    samples = replicas * int(atomic) * (int(accum) + 1)
    rate = float(throughput(PARAMS, len(placement), replicas, atomic, accum))
    assert seconds is not None and math.isclose(seconds, samples / rate, rel_tol=1e-12)


def test_unknown_kinds_and_lengths_are_none_not_guesses() -> None:
    assert ModelOracle(model()).step_seconds("a100", (1,), 128) is None
    assert ModelOracle(model(target=None)).remaining_steps(128) is None


def test_remaining_steps_divide_the_progress_left_by_the_gain_of_a_step() -> None:
    oracle = ModelOracle(model(progress=400.0, target=1000.0))
    assert oracle.remaining_steps(128) == pytest.approx(600.0)  # a step at M0 is worth one
    large = float(gain(GRAD, 128, 1024))
    assert oracle.remaining_steps(1024) == pytest.approx(600.0 / large)
    assert ModelOracle(model(progress=2000.0)).remaining_steps(128) == 0.0


def test_oracles_of_equal_models_are_equal() -> None:
    assert ModelOracle(model(5.0)) == ModelOracle(model(5.0))
    assert ModelOracle(model(5.0)) != ModelOracle(model(6.0))


def test_optimus_with_model_oracles_ranks_jobs_by_remaining_work() -> None:
    """Two jobs alike but for their progress: the one with more work left gets the spare GPUs
    (with a constant remaining work they would tie and the first would win)."""
    cluster = ClusterView((NodeView("n0", "t4", 3),))

    def job(name: str, progress: float, submit: float) -> JobView:
        m = model(progress=progress, target=10_000.0)
        return JobView(id=name, submit_time=submit, model=m, limits=LIMITS,
                       requested_batch_size=1024, oracle=ModelOracle(m))

    almost_done = job("almost-done", 9_900.0, 0.0)
    fresh = job("fresh", 0.0, 1.0)
    counts = {k: a.num_replicas
              for k, a in OptimusPolicy().allocate([almost_done, fresh], cluster, 0.0).items()}
    assert counts == {"almost-done": 1, "fresh": 2}
    # And the other way round, so the order of submission is not what decides.
    almost_done = job("almost-done", 9_900.0, 1.0)
    fresh = job("fresh", 0.0, 0.0)
    counts = {k: a.num_replicas
              for k, a in OptimusPolicy().allocate([fresh, almost_done], cluster, 0.0).items()}
    assert counts == {"almost-done": 1, "fresh": 2}


def test_every_policy_declares_its_capabilities_and_wrappers_forward_them() -> None:
    needs = {"optimus", "gavel", "gavel-ftf"}
    for name in POLICIES:
        policy = make_policy(name)
        assert isinstance(policy, BasePolicy) and policy.name == name
        assert policy.needs_oracle == (name in needs)
        wrapped = PolicyWrapper(policy)
        for capability in ("name", "adaptive", "heterogeneity_aware", "profiles_on_arrival",
                           "needs_oracle"):
            assert getattr(wrapped, capability) == getattr(policy, capability)
    assert make_policy("thrifty").profiles_on_arrival and make_policy("sia").profiles_on_arrival
    assert not make_policy("pollux").profiles_on_arrival and make_policy("pollux").adaptive
    assert np.all([not make_policy(n).adaptive for n in ("fifo", "tiresias", "optimus")])


def test_the_carbon_aware_wrapper_needs_an_oracle_whatever_it_wraps() -> None:
    carbon = CarbonAwarePolicy(make_policy("fifo"), StaticIntensity(300.0))
    assert carbon.needs_oracle and carbon.name == "fifo" and not carbon.adaptive
    metered = MeteredPolicy(make_policy("thrifty"), tariff=None)  # type: ignore[arg-type]
    assert metered.profiles_on_arrival and metered.heterogeneity_aware and not metered.needs_oracle


def test_gavel_with_model_oracles_follows_each_jobs_latest_model() -> None:
    cluster = ClusterView((NodeView("t0", "t4", 4), NodeView("a0", "a100", 4)))
    fast = ThroughputParams(0.01, 0.0004, 0.01, 0.0005, 0.02, 0.001, 2.0)

    def job(params_a100: ThroughputParams) -> JobView:
        m = GoodputModel({"t4": PARAMS, "a100": params_a100}, GRAD, LIMITS)
        return JobView(id="j", submit_time=0.0, model=m, limits=LIMITS, requested_replicas=1,
                       requested_batch_size=256, oracle=ModelOracle(m))

    policy = make_policy("gavel")
    policy.allocate([job(fast)], cluster, 360.0)  # rounds fall on multiples of 360 s
    first = dict(policy.last_fractions["j"])
    assert first["a100"] > first["t4"]  # the faster kind, by the job's own model
    policy.allocate([job(replace_params(fast, 50.0))], cluster, 720.0)  # a100 now far slower
    assert policy.last_fractions["j"]["t4"] > policy.last_fractions["j"]["a100"]


def replace_params(params: ThroughputParams, factor: float) -> ThroughputParams:
    """The same job `factor` times slower to compute."""
    return replace(params, alpha_c=params.alpha_c * factor, beta_c=params.beta_c * factor)

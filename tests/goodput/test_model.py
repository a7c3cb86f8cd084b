from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty.errors import ThriftyError
from thrifty.goodput import (
    BatchLimits,
    GoodputModel,
    GradientStats,
    ThroughputParams,
    growth_cap,
    split_batch,
)

PARAMS = ThroughputParams(0.02, 0.0005, 0.01, 0.001, 0.05, 0.004, 1.5)
LIMITS = BatchLimits(init_batch_size=128, max_batch_size=8192, min_local_bsz=16, max_local_bsz=256)


def model(sqr: float = 1.0, var: float = 50.0, **kw) -> GoodputModel:
    return GoodputModel({"t4": PARAMS}, GradientStats(sqr, var), LIMITS, **kw)


def test_best_configuration_respects_every_limit() -> None:
    m = model()
    nodes = np.array([1, 1, 1, 2, 4, 8])
    replicas = np.array([1, 2, 4, 8, 16, 32])
    goodput, atomic, accum = m.best("t4", nodes, replicas)
    batch = replicas * atomic * (accum + 1)
    assert np.all(goodput > 0)
    assert np.all((atomic >= LIMITS.min_local_bsz) & (atomic <= LIMITS.max_local_bsz))
    assert np.all((batch >= LIMITS.init_batch_size) & (batch <= LIMITS.max_batch_size))
    # One GPU training above its initial batch accumulates, to measure gradient noise.
    assert accum[0] >= 1 or batch[0] == LIMITS.init_batch_size


def test_noisier_gradients_choose_larger_batches() -> None:
    quiet = model(sqr=1.0, var=1.0)
    noisy = model(sqr=1.0, var=500.0)
    _, a_quiet, s_quiet = quiet.best("t4", 2, 8)
    _, a_noisy, s_noisy = noisy.best("t4", 2, 8)
    assert a_noisy * (s_noisy + 1) > a_quiet * (s_quiet + 1)


def test_placements_beyond_the_largest_batch_get_no_goodput() -> None:
    goodput, atomic, _ = model().best("t4", 16, LIMITS.max_batch_size // 16 + 1)
    assert goodput == 0 and atomic == 0
    assert model().best("t4", 0, 0)[0] == 0


@settings(max_examples=40, deadline=None)
@given(var=st.floats(0.1, 1e4), replicas=st.integers(1, 32))
def test_best_goodput_beats_every_other_valid_configuration(var: float, replicas: int) -> None:
    m = model(var=var)
    nodes = max(1, replicas // 4)
    best, _, _ = m.best("t4", nodes, replicas)
    for other in (16, 32, 64, 128, 256):
        if other * replicas < LIMITS.init_batch_size or other * replicas > LIMITS.max_batch_size:
            continue
        if replicas == 1 and other > LIMITS.init_batch_size:
            continue  # one replica above its initial batch must accumulate, so this is invalid
        assert float(m.goodput("t4", nodes, replicas, other, 0)) <= float(best) * 1.03


def test_more_gpus_on_one_node_never_lower_the_best_goodput_of_a_scalable_job() -> None:
    m = model(var=1000.0)
    goodput, _, _ = m.best("t4", 1, np.arange(1, 9))
    assert np.all(np.diff(goodput) > 0)


def test_unknown_gpu_kind_is_named() -> None:
    with pytest.raises(ThriftyError, match=r"'a100'.*t4"):
        model().best("a100", 1, 1)


def test_json_round_trip() -> None:
    m = model(explored={"t4": 4}, local_caps={"t4": 64}, progress=12.5, target_progress=40.0)
    again = GoodputModel.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    with pytest.raises(ThriftyError, match="grad"):
        GoodputModel.from_dict({k: v for k, v in m.to_dict().items() if k != "grad"})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"init_batch_size": 0, "max_batch_size": 8}, "init_batch_size"),
        ({"init_batch_size": 64, "max_batch_size": 32}, "max_batch_size"),
        ({"init_batch_size": 8, "max_batch_size": 64, "min_local_bsz": 16, "max_local_bsz": 8},
         "max_local_bsz"),
        ({"init_batch_size": 8, "max_batch_size": 64, "min_local_bsz": 128}, "min_local_bsz"),
    ],
)
def test_contradictory_limits_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ThriftyError, match=field):
        BatchLimits(**kwargs)


def test_split_batch_accumulates_only_when_memory_requires() -> None:
    atomic, accum = split_batch(1024, 4, init_batch_size=128, max_local_bsz=128)
    assert (int(atomic), int(accum)) == (128, 1)
    atomic, accum = split_batch(256, 1, init_batch_size=128, max_local_bsz=512)
    assert (int(atomic), int(accum)) == (128, 1)  # one replica above its initial batch
    atomic, accum = split_batch(128, 1, init_batch_size=128, max_local_bsz=512)
    assert (int(atomic), int(accum)) == (128, 0)


def test_growth_cap_doubles_what_was_explored() -> None:
    assert growth_cap(0, LIMITS) == 1
    assert growth_cap(3, LIMITS) == 6
    assert growth_cap(400, LIMITS) == LIMITS.max_batch_size // LIMITS.min_local_bsz

from __future__ import annotations

from pathlib import Path

import pytest
from launching import python_prints

from thrifty.contract import Allocation, Env
from thrifty.errors import ThriftyError
from thrifty.goodput.throughput import step_time
from thrifty.train import TrainEnv
from thrifty.train.profile import StepProfile


def test_profile_skips_warmup_resists_outliers_and_fits_a_predictive_model() -> None:
    profile = StepProfile()
    # A job whose steps take 2 ms + 0.1 ms per sample, with one slow outlier per configuration.
    for bsz in (16, 64):
        profile.record(1, 1, bsz, 1.0, 0.0)  # warm-up steps: never seen by the model
        profile.record(1, 1, bsz, 1.0, 0.0)
        for step in range(20):
            seconds = 0.002 + 0.0001 * bsz
            profile.record(1, 1, bsz, 10 * seconds if step == 7 else seconds, 0.0)
    observed = {o.atomic_bsz: o.step_time for o in profile.observations()}
    assert observed == {16: pytest.approx(0.0036), 64: pytest.approx(0.0084)}
    params = profile.fit()
    assert params is not None
    assert float(step_time(params, 1, 1, 32)) == pytest.approx(0.0052, rel=0.05)
    copy = StepProfile()
    copy.load_state_dict(profile.state_dict())
    assert copy.observations() == profile.observations()


def test_accumulation_micro_steps_count_as_single_replica_compute() -> None:
    profile = StepProfile()
    for _ in range(5):
        profile.record_compute(32, 0.01)
        profile.record(1, 2, 32, 0.012, 0.002)
    assert [(o.num_replicas, o.atomic_bsz, o.sync_time) for o in profile.observations()] == [
        (1, 32, 0.0), (2, 32, 0.002)
    ]


def linear_step(bsz: int) -> float:
    """Steady-state seconds per step of a synthetic job: 2 ms + 0.05 ms per sample."""
    return 0.002 + 0.00005 * bsz


def test_revisited_sizes_average_over_the_machine_speeds_they_met() -> None:
    # The machine alternates between full speed and 1.5× slower; the job visits 16 and 128 in
    # turn, so each size met both speeds, but its latest visit met only one of them.
    profile = StepProfile()
    slow = {16: (False, True, False, True), 128: (True, False, True, False)}
    for visit in range(4):
        for bsz in (16, 128):
            factor = 1.5 if slow[bsz][visit] else 1.0
            for _ in range(80):
                profile.record(1, 1, bsz, factor * linear_step(bsz), 0.0)
    observed = {o.atomic_bsz: o.step_time for o in profile.observations()}
    assert observed == {16: pytest.approx(1.25 * linear_step(16)),
                        128: pytest.approx(1.25 * linear_step(128))}
    params = profile.fit()
    assert params is not None
    for unseen in (48, 256):
        assert float(step_time(params, 1, 1, unseen)) == pytest.approx(
            1.25 * linear_step(unseen), rel=0.02
        )


def test_warmup_steps_after_each_change_never_reach_the_model() -> None:
    profile = StepProfile()
    for bsz in (32, 64, 32):
        for step in range(10):
            slow = 5.0 if step < 2 else 1.0  # allocator growth, kernel selection
            profile.record(1, 1, bsz, slow * linear_step(bsz), 0.0)
    observed = {o.atomic_bsz: o.step_time for o in profile.observations()}
    assert observed == {32: pytest.approx(linear_step(32)), 64: pytest.approx(linear_step(64))}


def test_accumulation_micro_steps_skip_warmup_after_a_change() -> None:
    profile = StepProfile()
    profile.record_compute(32, 1.0)  # before any completed step: nothing known to be warm
    profile.record(1, 2, 64, 0.02, 0.005)
    profile.record_compute(32, 1.0)  # a new micro-batch's first optimizer step
    for step in range(6):
        profile.record_compute(32, 1.0 if step < 2 else 0.01)
        profile.record(1, 2, 32, 0.012, 0.002)
    compute = [o for o in profile.observations() if o.num_replicas == 1]
    assert [(o.atomic_bsz, o.step_time) for o in compute] == [(32, pytest.approx(0.01))]


def test_a_long_history_is_thinned_evenly_and_survives_a_checkpoint() -> None:
    profile = StepProfile()
    for step in range(5000):
        profile.record(1, 1, 64, 1.0 + step, 0.0)
    kept = [s for s, _ in profile.state_dict()["table"][0][3]]
    assert len(kept) <= 256
    assert min(kept) < 100 and max(kept) > 4900  # early and recent steps both represented
    median = profile.observations()[0].step_time
    assert median == pytest.approx(2500, rel=0.05)
    copy = StepProfile()
    copy.load_state_dict(profile.state_dict())
    assert copy.observations() == profile.observations()
    for step in range(5000, 10000):  # a resumed job keeps thinning at the rate it had reached
        profile.record(1, 1, 64, 1.0 + step, 0.0)
        copy.record(1, 1, 64, 1.0 + step, 0.0)
    assert copy.observations()[0].step_time == pytest.approx(5000, rel=0.05)
    assert copy.observations()[0].step_time == pytest.approx(
        profile.observations()[0].step_time, rel=0.01
    )


def test_profiles_saved_before_thinning_still_load() -> None:
    profile = StepProfile()
    profile.load_state_dict({"table": [[1, 1, 16, [[0.004, 0.0]] * 3]]})
    assert [o.step_time for o in profile.observations()] == [0.004]


def test_environment_of_torchrun_and_thrifty_executors(tmp_path: Path) -> None:
    granted = Allocation({"node-1": 4, "node-2": 4}, "a100")
    env = TrainEnv.from_environ({
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
        Env.CHECKPOINT_DIR: str(tmp_path), Env.REPORT: "http://127.0.0.1:1/r",
        Env.ALLOCATION: granted.to_json(), "TORCHELASTIC_RESTART_COUNT": "2",
    })
    assert (env.rank, env.world_size, env.num_nodes, env.distributed) == (5, 8, 2, True)
    assert env.checkpoint_dir == tmp_path and env.gpu_kind == "a100" and env.restarts == 2
    assert env.allocation == granted
    explicit = TrainEnv.from_environ({Env.CHECKPOINT_DIR: "/a"}, checkpoint_dir="/b")
    assert explicit.checkpoint_dir == Path("/b") and not explicit.distributed
    with pytest.raises(ThriftyError, match=r"LOCAL_WORLD_SIZE=3.*THRIFTY_ALLOCATION"):
        TrainEnv.from_environ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "3"})
    # Three replicas on two nodes ({a: 2, b: 1}): only the allocation tells the node count.
    uneven = TrainEnv.from_environ({
        "RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
        Env.ALLOCATION: Allocation({"a": 2, "b": 1}, "cpu").to_json(),
    })
    assert (uneven.num_nodes, uneven.world_size) == (2, 3)
    four = Allocation({"a": 1, "b": 1, "c": 1, "d": 1}, "cpu").to_json()
    with pytest.raises(ThriftyError, match="THRIFTY_ALLOCATION grants 4 nodes"):
        TrainEnv.from_environ({"WORLD_SIZE": "3", Env.ALLOCATION: four})


def test_without_an_allocation_a_plain_launcher_gets_the_defaults() -> None:
    env = TrainEnv.from_environ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert (env.allocation, env.gpu_kind, env.num_nodes) == (None, "cpu", 2)
    # The variables executors used to set are no longer read: the allocation says it all.
    old = TrainEnv.from_environ({"THRIFTY_GPU_KIND": "a100", "THRIFTY_NUM_NODES": "2"})
    assert (old.gpu_kind, old.num_nodes) == ("cpu", 1)


def test_a_malformed_allocation_names_the_variable() -> None:
    with pytest.raises(ThriftyError, match=r"THRIFTY_ALLOCATION is not an allocation.*not JSON"):
        TrainEnv.from_environ({Env.ALLOCATION: "{a: 2"})
    with pytest.raises(ThriftyError, match=r"THRIFTY_ALLOCATION is not an allocation.*'gpus'"):
        TrainEnv.from_environ({Env.ALLOCATION: '{"kind": "a100"}'})


def test_the_environment_reader_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; import thrifty.train.env as e; "
            "print(e.TrainEnv.from_environ({}).world_size)")
    assert python_prints(code) == "1"

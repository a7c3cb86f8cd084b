from __future__ import annotations

from pathlib import Path

import pytest

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
    assert [(o.num_replicas, o.atomic_bsz, o.sync_time) for o in profile.observations()] == [
        (1, 32, 0.0)
    ]


def test_environment_of_torchrun_and_thrifty_executors(tmp_path: Path) -> None:
    env = TrainEnv.from_environ({
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
        "THRIFTY_CHECKPOINT_DIR": str(tmp_path), "THRIFTY_REPORT": "http://127.0.0.1:1/r",
        "THRIFTY_GPU_KIND": "a100", "TORCHELASTIC_RESTART_COUNT": "2",
    })
    assert (env.rank, env.world_size, env.num_nodes, env.distributed) == (5, 8, 2, True)
    assert env.checkpoint_dir == tmp_path and env.gpu_kind == "a100" and env.restarts == 2
    explicit = TrainEnv.from_environ({"THRIFTY_CHECKPOINT_DIR": "/a"}, checkpoint_dir="/b")
    assert explicit.checkpoint_dir == Path("/b") and not explicit.distributed
    with pytest.raises(ThriftyError, match="LOCAL_WORLD_SIZE=3"):
        TrainEnv.from_environ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "3"})

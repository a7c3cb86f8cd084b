"""thrifty.train inside Ray Train's TorchTrainer: a real loopback Ray node, real training.

In the main test examples/ray_train_digits.py runs as the Ray driver, with an elastic worker range
of 1 to 2 on a node with 2 CPUs. Once thrifty has checkpointed its second epoch, the test kills one
training worker's process, as a crash would; Ray Train then replaces the whole worker group and
calls the training function again, which must resume from thrifty's checkpoint, not from scratch.
The others check what Ray Train relies on without starting Ray: a process group that the launcher
created is used and left to it, and the module imports Ray only when asked to start a job.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from launching import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "cluster"))
from ray_cluster import HEAD_IP, RAY_ENV, RayCluster, RayNode, start_node

from thrifty.errors import ThriftyError
from thrifty.train import CheckpointStore, init
from thrifty.train.ray_train import CHECKPOINT_FOLDER

EXAMPLE = Path(__file__).parents[2] / "examples" / "ray_train_digits.py"
RUN_NAME = "ray-train-digits"
EPOCHS = 8

TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # notice the lost worker sooner
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # one actor fewer to start on 2 cores
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs ray[train] (the test extra)"
)


def _train_workers(node: RayNode) -> list[int]:
    """Processes of the node that are Ray Train workers (their process title names the class)."""
    found = []
    for pid in node.pids():
        with contextlib.suppress(OSError):
            if b"RayTrainWorker" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.append(pid)
    return found


def _kill_a_worker_once(marker: Path, node: RayNode, driver: subprocess.Popen,
                        deadline: float) -> int | None:
    """Wait until `marker` exists, then SIGKILL one training worker; its pid, or None when the
    driver ended (or time ran out) first."""
    while driver.poll() is None and time.monotonic() < deadline:
        if marker.exists():
            workers = _train_workers(node)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                return workers[0]
        time.sleep(0.05)
    return None


@needs_ray
def test_torch_trainer_trains_and_resumes_from_thrifty_checkpoint_after_a_worker_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**RAY_ENV, **TRAIN_ENV}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path / "home"))
    storage, report = tmp_path / "ray-results", tmp_path / "report.json"
    ckpts = storage / RUN_NAME / CHECKPOINT_FOLDER
    log = tmp_path / "driver.log"
    start = time.monotonic()
    node, address = start_node(HEAD_IP, num_cpus=2)
    # Ray's own background processes (Ray Train's placement-group cleaner) look the cluster up;
    # with another loopback cluster up beside this one (the cluster tests'), they must be told.
    monkeypatch.setenv("RAY_ADDRESS", address)
    driver = None
    try:
        with open(log, "wb") as out:
            driver = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--address", address, "--workers", "1", "2",
                 "--epochs", str(EPOCHS), "--storage", str(storage), "--name", RUN_NAME,
                 "--report", str(report), "--max-failures", "1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        # ckpt-000000001 is written at the end of epoch 1: from then on a restart must resume.
        # Generous limits: alone this takes about 90 s, beside other tests on 2 cores twice that.
        killed = _kill_a_worker_once(ckpts / "ckpt-000000001.pt", node, driver, start + 300)
        try:
            code = driver.wait(timeout=max(1.0, start + 420 - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if driver is not None and driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        RayCluster(address, (node,)).stop()
    text = log.read_text(errors="replace")
    assert killed is not None, f"no training worker was killed mid-run:\n{text[-4000:]}"
    assert code == 0, text[-4000:]

    results = [line for line in text.splitlines() if line.startswith("result: ")]
    assert results, text[-4000:]
    result = json.loads(results[-1].removeprefix("result: "))
    # The attempt that finished began where thrifty's checkpoint left off, on both workers.
    assert 2 <= result["start_epoch"] < EPOCHS
    assert result["start_step"] > 0
    assert result["world_size"] == 2
    assert result["test_accuracy"] >= 0.85

    latest = CheckpointStore(ckpts).latest()
    assert latest is not None and latest[1]["epoch"] == EPOCHS
    published = json.loads(report.read_text())
    assert published["job_id"] == RUN_NAME  # named after the Ray run
    assert published["epoch"] == EPOCHS
    assert published["model"]["explored"] == {"cpu": 2}
    assert "cpu" in published["model"]["throughput"]


LAUNCHER_GROUP = """
import datetime
import torch.distributed as dist
import thrifty.train

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # as Ray Train does
job = thrifty.train.init()
assert not job.owns_group
job.finish()
assert dist.is_initialized(), "finish() destroyed the launcher's process group"
dist.barrier()  # the launcher can still use its group
dist.destroy_process_group()
print("left to the launcher")
"""


def test_a_process_group_created_by_the_launcher_is_used_and_left_to_it(tmp_path: Path) -> None:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCHER_GROUP],
            env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                 "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                 "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
                 "THRIFTY_HOME": str(tmp_path)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=90) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "left to the launcher" in out


def test_a_launcher_group_that_disagrees_with_rank_and_world_size_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                            "LOCAL_WORLD_SIZE": "2"}.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ThriftyError, match=r"rank 0 of 1, but RANK=1 and WORLD_SIZE=2"):
            init()
    finally:
        dist.destroy_process_group()


@needs_ray
def test_ray_is_imported_only_when_a_job_starts_and_only_inside_a_training_function() -> None:
    code = (
        "import sys\n"
        "import thrifty.train.ray_train as rt\n"
        "assert 'ray' not in sys.modules, 'importing thrifty.train.ray_train imported ray'\n"
        "from thrifty.errors import ThriftyError\n"
        "try:\n"
        "    rt.init()\n"
        "except ThriftyError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **RAY_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "only inside a Ray Train training function" in done.stdout

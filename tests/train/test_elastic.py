"""Real processes: stop signals, exact resume, a changed world size, out-of-memory recovery."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from launching import WORKER, launch

from thrifty.train import EXIT_RESIZE, CheckpointStore


def test_resume_at_the_same_world_size_is_bit_identical(tmp_path: Path) -> None:
    args = ("--epochs", "1", "--batch", "32")
    codes, plain, err = launch(1, tmp_path / "plain", *args)
    assert codes == [0], err
    ckpt = str(tmp_path / "ckpt")
    codes, _, err = launch(1, tmp_path / "stopped", *args, "--ckpt", ckpt, "--kill-at", "20")
    assert codes == [EXIT_RESIZE], err
    latest = CheckpointStore(ckpt).latest()
    assert latest is not None and latest[1]["step"] == 21  # the step after the signal
    codes, resumed, err = launch(1, tmp_path / "resumed", *args, "--ckpt", ckpt)
    assert codes == [0], err
    assert resumed[0]["start"] == [0, 21 * 32, 21]  # the exact next sample
    assert resumed[0]["restored_from"] is not None
    assert resumed[0]["params"] == plain[0]["params"]
    assert resumed[0]["end"] == plain[0]["end"]


def test_signal_to_one_replica_stops_all_and_one_replica_resumes_at_the_same_sample(
    tmp_path: Path,
) -> None:
    ckpt = str(tmp_path / "ckpt")
    report = tmp_path / "report.json"
    args = ("--epochs", "2", "--batch", "32", "--max-batch", "256", "--ckpt", ckpt)
    codes, _, err = launch(
        2, tmp_path / "two", *args, "--kill-at", "12", "--kill-rank", "1",
        "--report", str(report),
    )
    assert codes == [EXIT_RESIZE, EXIT_RESIZE], err
    latest = CheckpointStore(ckpt).latest()
    assert latest is not None
    saved = latest[1]
    # Both replicas stop at the end of the step after the signal, as a single replica does.
    assert saved["world_size"] == 2 and saved["step"] == 13
    assert saved["noise"]["updates"] >= 2  # measured from the two replicas' local gradients
    position = saved["loader"]["sampler"]["position"]
    assert json.loads(report.read_text())["model"]["explored"] == {"cpu": 2}

    codes, results, err = launch(1, tmp_path / "one", *args)
    assert codes == [0], err
    one = results[0]
    assert one["start"] == [saved["epoch"], position, 13]
    # The total batch carries over; one replica now accumulates what two computed in parallel.
    assert one["batch_size"] >= saved["loader"]["batch_size"] or one["adoptions"]
    assert one["end"][0] == 2 and one["accuracy"] > 0.5  # chance is 0.1


def test_out_of_memory_lowers_the_per_replica_limit_and_training_continues(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    args = ("--epochs", "1", "--batch", "32", "--oom-above", "16", "--ckpt", str(ckpt))
    codes, results, err = launch(1, tmp_path / "oom", *args)
    assert codes == [EXIT_RESIZE], err
    assert "out of memory at 32 samples per replica; per-replica limit lowered to 24" in err
    assert json.loads((ckpt / "local_caps.json").read_text()) == {"cpu": 24}
    codes, results, err = launch(1, tmp_path / "oom", *args)
    assert codes == [0], err
    done = results[0]
    assert done["batch_size"] == 32 and done["accum_steps"] == 1  # same batch, accumulated
    assert max(done["micro_sizes"]) <= 16
    assert done["end"][0] == 1


def _alive(pid: int) -> bool:
    """Running (an exited process not yet reaped by its new parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_shell_that_dies_of_the_signal_still_stops_its_worker_cleanly(tmp_path: Path) -> None:
    # `sh -c "...; true"` keeps the shell as the worker's parent and does not pass SIGTERM on.
    ckpt = tmp_path / "ckpt"
    ready = tmp_path / "ready"
    worker = " ".join([
        shlex.quote(sys.executable), shlex.quote(str(WORKER)), "--out", str(tmp_path / "r"),
        "--epochs", "50", "--ckpt", str(ckpt), "--touch-at", "5", "--touch", str(ready),
    ])
    shell = subprocess.Popen(["sh", "-c", f"{worker}; true"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), "the worker never started training"
    pid = int(ready.read_text())
    shell.send_signal(signal.SIGTERM)
    shell.wait(timeout=10)
    try:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the orphaned worker kept training"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    latest = CheckpointStore(ckpt).latest()
    assert latest is not None
    saved = latest[1]
    steps_per_epoch = -(-1500 // 32)  # the worker trains on 1,500 digits, batch 32
    assert saved["step"] > 5 and saved["epoch"] < 50
    # Saved at a step boundary inside an epoch, pointing at the next sample.
    done_in_epoch = saved["step"] - saved["epoch"] * steps_per_epoch
    assert saved["loader"]["sampler"]["position"] == min(done_in_epoch * 32, 1500)

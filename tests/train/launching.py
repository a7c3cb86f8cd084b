"""Helpers that run tests/train/worker.py as real processes joined by a gloo process group."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    replicas: int, out: Path, *args: str, timeout: float = 120.0, worker: Path = WORKER
) -> tuple[list[int], list[dict | None], str]:
    """Start `replicas` workers (default: worker.py) as torchrun would (RANK, WORLD_SIZE, ...
    on loopback) and wait.

    Returns their exit codes, their result files (None where a worker wrote none) and stderr.
    """
    port = free_port()
    procs = []
    for rank in range(replicas):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(replicas),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(replicas),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(worker), "--out", str(out), *args],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )
    codes, errors = [], []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=timeout)
            codes.append(proc.returncode)
            errors.append(err)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = []
    for rank in range(replicas):
        path = Path(f"{out}.{rank}.json")
        results.append(json.loads(path.read_text()) if path.exists() else None)
        path.unlink(missing_ok=True)
    return codes, results, "\n".join(errors)


def python_prints(code: str) -> str:
    """What a fresh interpreter running `code` prints (to check what importing loads)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()

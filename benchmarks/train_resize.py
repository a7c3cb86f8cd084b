"""A long MNIST-1D run resized many times against the same run left alone (same seed).

Runs examples/mnist1d_cnn.py on this machine's loopback (gloo), as the local executor does:
each replica a process with RANK/WORLD_SIZE set, a resize being SIGTERM to every replica
(checkpoint, exit 75) and a restart at the next world size from the checkpoint. Prints the
final test accuracy of both runs, their difference, and every replica's exit codes.

    PYTHONPATH=src python benchmarks/train_resize.py --epochs 200 --worlds 1,2,1,2,1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mnist1d_cnn.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(world: int, folder: Path, tag: str, epochs: int) -> list[subprocess.Popen[bytes]]:
    port, procs = free_port(), []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, str(EXAMPLE), "--epochs", str(epochs), "--seed", "0",
                   "--ckpt", str(folder / f"{tag}-ckpt"), "--result", str(folder / f"{tag}.json")]
        with open(folder / f"{tag}-{rank}.log", "ab") as log:
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs


def last_epoch(log: Path) -> int:
    found = re.findall(r"^epoch (\d+)", log.read_text(), re.M)
    return int(found[-1]) if found else -1


def run(folder: Path, tag: str, epochs: int, worlds: list[int]) -> tuple[float, list[list[int]]]:
    """Train `epochs` over segments at `worlds`, each but the last stopped after an equal share
    of the epochs; returns the final accuracy and each segment's exit codes."""
    codes = []
    for segment, world in enumerate(worlds):
        procs = start(world, folder, tag, epochs)
        if segment < len(worlds) - 1:
            until = (segment + 1) * epochs // len(worlds)
            while last_epoch(folder / f"{tag}-0.log") < until and procs[0].poll() is None:
                time.sleep(0.05)
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
        codes.append([proc.wait() for proc in procs])
    logs = "".join(p.read_text() for p in folder.glob(f"{tag}-*.log"))
    if "terminate called" in logs:
        print(f"{tag}: a replica aborted (terminate called)")
    return float(json.loads((folder / f"{tag}.json").read_text())["accuracy"]), codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--worlds", default="1,2,1,2,1", help="world size of each segment")
    args = parser.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        plain, plain_codes = run(folder, "plain", args.epochs, [worlds[-1]])
        resized, resized_codes = run(folder, "resized", args.epochs, worlds)
    print(f"epochs {args.epochs}  segments {worlds}")
    print(f"{'unresized':>10} {'resized':>10} {'difference':>11}")
    print(f"{plain:10.4f} {resized:10.4f} {resized - plain:+11.4f}")
    print(f"exit codes: unresized {plain_codes}  resized {resized_codes}")


if __name__ == "__main__":
    main()

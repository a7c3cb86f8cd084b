"""Accuracy of the mnist1d CNN on two gloo replicas, and after losing one of them mid-run.

1. `torchrun --nproc_per_node 2` trains examples/mnist1d_cnn.py to the end (target: ≥ 85 % test
   accuracy).
2. The same run again, but once half of the epochs are checkpointed one worker is killed
   (SIGKILL, no warning); torchrun stops the other. Relaunched with one process, the job resumes
   from its last checkpoint and trains to the end (target: within 1 point of run 1).

Run:  python benchmarks/train_mnist1d.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mnist1d_cnn.py"


def command(replicas: int, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(replicas),
            "--master_addr", "127.0.0.1", "--master_port", str(port), str(EXAMPLE), *args]


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def newest_checkpoint(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.glob("ckpt-*.pt")
               if (m := re.match(r"ckpt-(\d+)\.pt", p.name))]
    return max(numbers, default=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        common = ("--epochs", str(args.epochs))
        start = time.perf_counter()
        subprocess.run(command(2, 29701, *common, "--ckpt", str(folder / "a"), "--result",
                               str(folder / "a.json")), check=True, env=env,
                       stdout=subprocess.DEVNULL)
        full = json.loads((folder / "a.json").read_text())
        print(f"2 replicas, uninterrupted: test accuracy {full['accuracy']:.4f} after "
              f"{full['epoch']} epochs, {full['steps']} steps, final batch {full['batch_size']} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

        ckpt = folder / "b"
        launcher = subprocess.Popen(
            command(2, 29702, *common, "--ckpt", str(ckpt), "--result", str(folder / "b.json")),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while newest_checkpoint(ckpt) < args.epochs // 2 - 1:
            if launcher.poll() is not None:
                raise SystemExit("the run ended before it could be interrupted")
            time.sleep(0.2)
        time.sleep(1.0)  # into the next epoch: the kill lands mid-epoch
        victim = children(launcher.pid)[-1]
        done = newest_checkpoint(ckpt) + 1
        os.kill(victim, signal.SIGKILL)
        code = launcher.wait(timeout=120)
        print(f"killed worker {victim} after {done} checkpointed epochs; torchrun exited {code}",
              flush=True)
        subprocess.run(command(1, 29703, *common, "--ckpt", str(ckpt), "--result",
                               str(folder / "b.json")), check=True, env=env,
                       stdout=subprocess.DEVNULL)
        resumed = json.loads((folder / "b.json").read_text())
        gap = (resumed["accuracy"] - full["accuracy"]) * 100
        print(f"resumed on 1 replica: test accuracy {resumed['accuracy']:.4f} after "
              f"{resumed['epoch']} epochs, final batch {resumed['batch_size']}; "
              f"difference {gap:+.2f} points (target: within 1)")


if __name__ == "__main__":
    main()

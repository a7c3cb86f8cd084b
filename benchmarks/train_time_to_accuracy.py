"""Time to a target test accuracy: adaptive batch size + AdaScale vs the fixed initial batch.

Both run the mnist1d CNN example on the same two gloo replicas of this machine, from batch 32;
the adaptive run may grow to 512. Three seeds each, run alternately so they share the machine's
other load; prints medians and their ratio.

Run:  python benchmarks/train_time_to_accuracy.py [--target 0.85 --seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mnist1d_cnn.py"


def run(max_batch: int, seed: int, target: float, epochs: int, port: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port), str(EXAMPLE),
            "--epochs", str(epochs), "--max-batch-size", str(max_batch), "--seed", str(seed),
            "--target", str(target), "--result", str(result),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    times: dict[str, list[float]] = {"fixed": [], "adaptive": []}
    for seed in args.seeds:
        for name, max_batch in (("fixed", 32), ("adaptive", 512)):
            result = run(max_batch, seed, args.target, args.epochs, 29600 + seed)
            reached = result["time_to_target"]
            times[name].append(float("inf") if reached is None else reached)
            print(f"seed {seed} {name:8s}: {reached if reached is not None else float('inf'):7.1f}"
                  f" s to {args.target:.0%} (final batch {result['batch_size']}, "
                  f"{result['steps']} steps, epoch {result['epoch']})", flush=True)
    fixed = statistics.median(times["fixed"])
    adaptive = statistics.median(times["adaptive"])
    print(f"median time to {args.target:.0%}: fixed {fixed:.1f} s, adaptive {adaptive:.1f} s, "
          f"ratio adaptive/fixed {adaptive / fixed:.2f}")


if __name__ == "__main__":
    main()

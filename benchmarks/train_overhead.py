"""Per-step overhead of thrifty.train over plain DistributedDataParallel, measured side by side.

Two gloo replicas on this machine train the same MLP (≥ 20 ms per step) in alternating blocks,
once wrapped by plain DDP and once by thrifty (timing, gradient-noise hook, LR scaling, online
model fitting); alternating blocks share whatever else the machine is doing. Prints the ratio
of median step times.

Run:  python benchmarks/train_overhead.py [--steps 30 --blocks 8 --width 1536]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset


def _model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def worker(steps: int, blocks: int, width: int, batch: int, calibrate: bool) -> None:
    import thrifty.train

    job = thrifty.train.init(adapt_every=25)
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(50_000, 256, generator=gen),
                         torch.randint(0, 10, (50_000,), generator=gen))
    plain = _model(width)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    ddp = DistributedDataParallel(plain)
    plain2 = _model(width)
    plain_opt2 = torch.optim.SGD(plain2.parameters(), lr=0.01)
    ddp2 = DistributedDataParallel(plain2)
    mine = _model(width)
    my_opt = torch.optim.SGD(mine.parameters(), lr=0.01)
    wrapped = job.parallel(mine, my_opt)
    total = batch * job.env.world_size
    loader = job.loader(data, batch_size=total, max_batch_size=total)
    batches = iter(loader)
    x_all, y_all = data.tensors
    times: dict[str, list[float]] = {"ddp": [], "thrifty": []}
    for block in range(blocks):
        order = ("ddp", "thrifty") if block % 2 == 0 else ("thrifty", "ddp")  # ABBA: no drift bias
        for name in order:
            for step in range(steps):
                if name == "ddp" or (calibrate and name == "thrifty"):
                    net, opt = (ddp, plain_opt) if name == "ddp" else (ddp2, plain_opt2)
                    idx = torch.randint(0, len(data), (batch,))
                    start = time.perf_counter()
                    x, y = x_all[idx], y_all[idx]
                    opt.zero_grad()
                    F.cross_entropy(net(x), y).backward()
                    opt.step()
                else:
                    start = time.perf_counter()
                    x, y = next(batches)
                    my_opt.zero_grad()
                    F.cross_entropy(wrapped(x), y).backward()
                    my_opt.step()
                if step >= 3:
                    times[name].append(time.perf_counter() - start)
    if job.env.rank == 0:
        ddp_ms = statistics.median(times["ddp"]) * 1e3
        ours_ms = statistics.median(times["thrifty"]) * 1e3
        print(f"plain DDP      {ddp_ms:7.2f} ms/step (median of {len(times['ddp'])})")
        label = "plain DDP (2nd)" if calibrate else "thrifty.train"
        print(f"{label:15s}{ours_ms:7.2f} ms/step (median of {len(times['thrifty'])})")
        print(f"overhead ratio {ours_ms / ddp_ms:.3f} (target <= 1.05)")
    dist.barrier()
    job.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--width", type=int, default=1536)
    parser.add_argument("--batch", type=int, default=64, help="per replica")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--calibrate", action="store_true",
                        help="time a second plain DDP model in thrifty's place (an A/A run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.blocks, args.width, args.batch, args.calibrate)
        return
    procs = []
    for rank in range(args.replicas):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(args.replicas),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(args.replicas),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", *sys.argv[1:]],
                                      env=env))
    sys.exit(max(proc.wait() for proc in procs))


if __name__ == "__main__":
    main()

"""A long real job on scikit-learn's digits that the tests stop and resize many times.

The total batch is held at 4× the initial one (no adaptation), so AdaScale's factor is at work
and runs at different world sizes train alike. Every optimizer step's factor is checked against
its rule's bounds; the result file is written on a stop too (from `finally`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train
from thrifty.train import adapt

BATCH, TOTAL, MAX_LOCAL = 32, 128, 64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--stop-epoch", type=int, default=None, help="SIGTERM self in it")
    parser.add_argument("--stop-rank", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.set_num_threads(1)
    job = thrifty.train.init(args.ckpt, seed=3, adapt_every=5, min_gain=1e9, deterministic=True)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    train = TensorDataset(x[:1500], y[:1500])
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    model = job.parallel(model, optimizer, lr_scheduler=scheduler, scaling="adascale")
    loader = job.loader(train, batch_size=BATCH, max_batch_size=TOTAL,
                        local_bsz_bounds=(4, MAX_LOCAL))
    if job.restored is None:
        loader.set_config(*adapt.split(job.limits, job.env.world_size, TOTAL, MAX_LOCAL))
    checked, violations, top = 0, [], 0.0
    signalled = False
    try:
        for epoch in job.epochs(args.epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                before = job.step
                optimizer.step()
                if job.step == before:
                    continue  # an accumulation micro-step: no update, no factor
                # AdaScale's range at this step's batch, S = M/M0: [1, S] ([S, 1] below M0).
                scale = loader.current_batch_size / BATCH
                low, high = min(1.0, scale), max(1.0, scale)
                factor = model.last_lr_factor
                checked += 1
                top = max(top, factor)
                if not low - 1e-9 <= factor <= high + 1e-9:
                    violations.append([job.step, loader.current_batch_size, factor, low, high])
                if (epoch == args.stop_epoch and job.env.rank == args.stop_rank
                        and not signalled):
                    signalled = True
                    os.kill(os.getpid(), signal.SIGTERM)
            scheduler.step()
    finally:
        with torch.no_grad():
            acc = float((model.module(x[1500:]).argmax(1) == y[1500:]).float().mean())
        with open(f"{args.out}.{job.env.rank}.json", "w") as handle:
            json.dump({"rank": job.env.rank, "world": job.env.world_size, "accuracy": acc,
                       "epoch": job.epoch, "step": job.step, "batch_size": loader.batch_size,
                       "checked": checked, "violations": violations, "top_factor": top}, handle)
    job.finish()


if __name__ == "__main__":
    main()

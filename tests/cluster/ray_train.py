"""A small data-parallel job for the Ray executor's tests: an MLP on scikit-learn's digits.

Every rank prints where it starts (epoch and step, so a resumed attempt shows it resumed) and
every epoch it finishes. `--step-sleep` stretches each step so that a test can interrupt the job
between checkpoints; the batch stays fixed so that every epoch has the same number of steps.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds added per step")
    args = parser.parse_args()

    job = thrifty.train.init(report_interval_s=1.0)
    rank, world = job.env.rank, job.env.world_size
    print(f"rank {rank} of {world} starts at epoch {job.epoch} step {job.step} "
          f"(kind {job.kind}, master {os.environ.get('MASTER_ADDR')})", flush=True)
    raw = load_digits()
    data = TensorDataset(torch.tensor(raw.data, dtype=torch.float32) / 16.0,
                         torch.tensor(raw.target))
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model = job.parallel(model, optimizer)
    loader = job.loader(data, batch_size=64)
    for epoch in job.epochs(args.epochs):
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()), count + 1
            time.sleep(args.step_sleep)
        print(f"rank {rank} epoch {epoch} loss {total / max(count, 1):.4f} steps {count}",
              flush=True)
    print(f"rank {rank} done at epoch {job.epoch} step {job.step}", flush=True)
    job.finish()


if __name__ == "__main__":
    main()

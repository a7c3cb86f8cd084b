"""The digits MLP of examples/digits_mlp.py, trained until the test that runs it says stop.

A test that needs a training job alive through a resize or a server crash cannot size it in
epochs: a faster machine finishes them before the test gets there. This job trains until the file
`--stop-file` exists, so its length is the test's to decide. It checkpoints after every epoch and
resumes from the last checkpoint after a restart, as any thrifty.train job does.

Before each epoch rank 0 looks for the file and broadcasts what it saw, so every replica stops at
the same epoch (one that stopped alone would leave the others waiting in a collective). Every
attempt trains at least one epoch before it looks, so that its log shows where it resumed. On the
stop the job ends normally, its last report carrying the epoch it stopped at, and rank 0 prints
`stopped at epoch N`. `--epochs` is only the length the job declares to the scheduler; reaching it
without the stop file is an error, never a silent end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train

DECLARED_EPOCHS = 1_000_000  # hours at any speed: the stop file, not this, ends the job


def told_to_stop(job: thrifty.train.Job, stop_file: Path) -> bool:
    """Whether rank 0 sees the stop file, the same answer on every replica."""
    flag = torch.tensor([int(job.env.rank == 0 and stop_file.exists())])
    if job.env.distributed:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=DECLARED_EPOCHS)
    args = parser.parse_args()

    job = thrifty.train.init()
    raw = load_digits()
    x = torch.tensor(raw.data, dtype=torch.float32) / 16.0
    y = torch.tensor(raw.target)
    train, test = TensorDataset(x[:1500], y[:1500]), TensorDataset(x[1500:], y[1500:])
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model = job.parallel(model, optimizer)
    loader = job.loader(train, batch_size=32, max_batch_size=512)
    first = job.epoch
    stopped = False
    for epoch in job.epochs(args.epochs):
        if epoch > first and told_to_stop(job, args.stop_file):
            stopped = True
            break
        for inputs, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), labels).backward()
            optimizer.step()
        with torch.no_grad():
            acc = (model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()
        if job.env.rank == 0:
            print(f"epoch {epoch}: test accuracy {acc:.3f}, batch {loader.batch_size}",
                  flush=True)
    job.finish()
    if not stopped:
        sys.exit(f"trained all {args.epochs} epochs without seeing {args.stop_file}")
    if job.env.rank == 0:
        print(f"stopped at epoch {job.epoch}", flush=True)


if __name__ == "__main__":
    main()

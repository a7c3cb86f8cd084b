"""An MLP on scikit-learn's bundled digits, trained with thrifty.train.

Run:  torchrun --standalone --nproc_per_node 2 examples/digits_mlp.py --ckpt /tmp/digits-mlp

Diff from plain PyTorch (DistributedDataParallel + DistributedSampler):

    -dist.init_process_group("gloo")
    +job = thrifty.train.init(args.ckpt)
    -model = DistributedDataParallel(model)
    +model = job.parallel(model, optimizer)
    -loader = DataLoader(train, batch_size=32, sampler=DistributedSampler(train))
    +loader = job.loader(train, batch_size=32, max_batch_size=512)
    -for epoch in range(args.epochs):
    +for epoch in job.epochs(args.epochs):
    -dist.destroy_process_group()
    +job.finish()
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from stopping import add_stop_file, told_to_stop
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train


def digits(images: bool = False) -> tuple[TensorDataset, TensorDataset]:
    """Train/test split of the 1,797 8×8 digits that ship inside scikit-learn."""
    raw = load_digits()
    x = torch.tensor(raw.data, dtype=torch.float32) / 16.0
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.tensor(raw.target)
    return TensorDataset(x[:1500], y[:1500]), TensorDataset(x[1500:], y[1500:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ckpt", default=None, help="checkpoint folder")
    parser.add_argument("--report", default=None, help="report file or http URL")
    add_stop_file(parser)
    args = parser.parse_args()

    job = thrifty.train.init(args.ckpt, args.report)
    train, test = digits()
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model = job.parallel(model, optimizer)
    loader = job.loader(train, batch_size=32, max_batch_size=512)
    for epoch in job.epochs(args.epochs):
        if told_to_stop(job, args.stop_file):
            break
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        with torch.no_grad():
            acc = (model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()
        if job.env.rank == 0:
            print(f"epoch {epoch}: test accuracy {acc:.3f}, batch {loader.batch_size}")
    job.finish()


if __name__ == "__main__":
    main()

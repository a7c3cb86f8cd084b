"""A small CNN on scikit-learn's bundled 8×8 digits, trained with thrifty.train.

Run:  torchrun --standalone --nproc_per_node 2 examples/digits_cnn.py --ckpt /tmp/digits-cnn

Diff from plain PyTorch (DistributedDataParallel + DistributedSampler):

    -dist.init_process_group("gloo")
    +job = thrifty.train.init(args.ckpt)
    -model = DistributedDataParallel(model)
    +model = job.parallel(model, optimizer, lr_scheduler=scheduler)
    -loader = DataLoader(train, batch_size=32, sampler=DistributedSampler(train))
    +loader = job.loader(train, batch_size=32, max_batch_size=256, local_bsz_bounds=(8, 64))
    -for epoch in range(args.epochs):
    +for epoch in job.epochs(args.epochs):
    -dist.destroy_process_group()
    +job.finish()
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import thrifty.train

sys.path.insert(0, str(Path(__file__).parent))
from digits_mlp import digits
from stopping import add_stop_file, told_to_stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ckpt", default=None, help="checkpoint folder")
    parser.add_argument("--report", default=None, help="report file or http URL")
    add_stop_file(parser)
    args = parser.parse_args()

    job = thrifty.train.init(args.ckpt, args.report)
    train, test = digits(images=True)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    model = job.parallel(model, optimizer, lr_scheduler=scheduler)
    loader = job.loader(train, batch_size=32, max_batch_size=256, local_bsz_bounds=(8, 64))
    for epoch in job.epochs(args.epochs):
        if told_to_stop(job, args.stop_file):
            break
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        with torch.no_grad():
            acc = (model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()
        if job.env.rank == 0:
            print(f"epoch {epoch}: test accuracy {acc:.3f}, batch {loader.batch_size}")
    job.finish()


if __name__ == "__main__":
    main()

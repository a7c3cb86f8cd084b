"""A small 1-D CNN on MNIST-1D (generated locally), trained with thrifty.train.

Run:  torchrun --standalone --nproc_per_node 2 examples/mnist1d_cnn.py --epochs 30 --ckpt /tmp/m1d

Diff from plain PyTorch (DistributedDataParallel + DistributedSampler):

    -dist.init_process_group("gloo")
    +job = thrifty.train.init(args.ckpt)
    -model = DistributedDataParallel(model)
    +model = job.parallel(model, optimizer, lr_scheduler=scheduler)
    -loader = DataLoader(train, batch_size=32, sampler=DistributedSampler(train))
    +loader = job.loader(train, batch_size=32, max_batch_size=512, local_bsz_bounds=(8, 128))
    -for epoch in range(args.epochs):
    +for epoch in job.epochs(args.epochs):
    -dist.destroy_process_group()
    +job.finish()
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from mnist1d.data import get_dataset_args, make_dataset
from stopping import add_stop_file, told_to_stop
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train


def data(samples: int = 10_000) -> tuple[TensorDataset, TensorDataset]:
    args = get_dataset_args()
    args.num_samples = samples
    raw = make_dataset(args)  # generated here from its templates: no download
    train = TensorDataset(
        torch.tensor(raw["x"], dtype=torch.float32).unsqueeze(1), torch.tensor(raw["y"])
    )
    test = TensorDataset(
        torch.tensor(raw["x_test"], dtype=torch.float32).unsqueeze(1),
        torch.tensor(raw["y_test"]),
    )
    return train, test


class CNN(nn.Module):
    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.head = nn.Linear(channels * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.head(x.flatten(1))


def accuracy(model: nn.Module, test: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        x, y = test.tensors
        right = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--ckpt", default=None, help="checkpoint folder")
    parser.add_argument("--report", default=None, help="report file or http URL")
    add_stop_file(parser)
    parser.add_argument("--scaling", default="auto")
    parser.add_argument("--target", type=float, default=None, help="stop at this test accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", default=None, help="write a JSON summary here (rank 0)")
    args = parser.parse_args()

    job = thrifty.train.init(args.ckpt, args.report, seed=args.seed, adapt_every=20)
    train, test = data()
    model = CNN()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    model = job.parallel(model, optimizer, lr_scheduler=scheduler, scaling=args.scaling)
    loader = job.loader(
        train, batch_size=args.batch_size, max_batch_size=args.max_batch_size,
        local_bsz_bounds=(8, 256),
    )
    start = time.perf_counter()
    reached = None
    acc = 0.0
    for epoch in job.epochs(args.epochs):
        if told_to_stop(job, args.stop_file):
            break
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        acc = accuracy(model, test)
        if job.env.rank == 0:
            print(
                f"epoch {epoch} acc {acc:.4f} batch {loader.batch_size} "
                f"lr_factor {model.last_lr_factor:.2f} noise {job.noise.noise_scale() or 0:.0f}",
                flush=True,
            )
        if args.target is not None and acc >= args.target and reached is None:
            reached = time.perf_counter() - start
            break
    if job.env.rank == 0 and args.result:
        with open(args.result, "w") as handle:
            json.dump(
                {"accuracy": acc, "seconds": time.perf_counter() - start,
                 "time_to_target": reached, "epoch": job.epoch, "steps": job.step,
                 "batch_size": loader.batch_size, "adoptions": job.adoptions,
                 "noise_scale": job.noise.noise_scale(), "params_l2": float(np.sqrt(sum(
                     float(p.detach().pow(2).sum()) for p in model.module.parameters())))},
                handle,
            )
    job.finish()


if __name__ == "__main__":
    main()

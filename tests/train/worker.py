"""A small real training job on scikit-learn's digits, driven by the tests as a subprocess.

Options make it misbehave on purpose: send itself SIGTERM at a step, or fail with PyTorch's
out-of-memory error when a micro-batch exceeds what a pretend device holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train


class MemoryBound(nn.Module):
    """Raises the out-of-memory error a GPU would, above `limit` samples per forward pass."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.limit is not None and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"{x.shape[0]} samples do not fit, {self.limit} do")
        return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--max-local", type=int, default=None)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--report", default=None)
    parser.add_argument("--kill-at", type=int, default=None, help="SIGTERM self after this step")
    parser.add_argument("--kill-rank", type=int, default=0)
    parser.add_argument("--oom-above", type=int, default=None)
    parser.add_argument("--touch-at", type=int, default=None, help="create --touch after step")
    parser.add_argument("--touch", default=None)
    parser.add_argument("--scaling", default="auto")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    job = thrifty.train.init(args.ckpt, args.report, deterministic=True, adapt_every=10,
                             report_interval_s=0.2)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    train = TensorDataset(x[:1500], y[:1500])
    model = nn.Sequential(MemoryBound(args.oom_above), nn.Linear(64, 32), nn.ReLU(),
                          nn.Dropout(0.1), nn.Linear(32, 10))
    if args.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    model = job.parallel(model, optimizer, lr_scheduler=scheduler, scaling=args.scaling)
    loader = job.loader(train, batch_size=args.batch, max_batch_size=args.max_batch,
                        local_bsz_bounds=(4, args.max_local))
    start_epoch, start_position, start_step = job.epoch, loader.sampler.position, job.step
    seen: list[int] = []
    for _ in job.epochs(args.epochs):
        for xb, yb in loader:
            seen.append(int(xb.shape[0]))
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            if args.touch_at is not None and job.step == args.touch_at:
                with open(args.touch, "w") as handle:
                    handle.write(str(os.getpid()))
            if args.kill_at is not None and job.step == args.kill_at and (
                job.env.rank == args.kill_rank
            ):
                os.kill(os.getpid(), signal.SIGTERM)
        scheduler.step()
    digest = hashlib.sha256()
    for p in model.module.parameters():
        digest.update(p.detach().numpy().tobytes())
    model.eval()
    with torch.no_grad():
        acc = float((model(x[1500:]).argmax(1) == y[1500:]).float().mean())
    result = {
        "rank": job.env.rank,
        "world": job.env.world_size,
        "params": digest.hexdigest(),
        "accuracy": acc,
        "start": [start_epoch, start_position, start_step],
        "end": [job.epoch, job.step],
        "micro_sizes": seen,
        "batch_size": loader.batch_size,
        "accum_steps": loader.accum_steps,
        "atomic_bsz": loader.atomic_bsz,
        "adoptions": job.adoptions,
        "noise_updates": job.noise.updates_,
        "noise_scale": job.noise.noise_scale(),
        "progress": job.progress,
        "target_progress": job.target_progress,
        "restored_from": str(job.restored_from) if job.restored_from else None,
    }
    with open(f"{args.out}.{job.env.rank}.json", "w") as handle:
        json.dump(result, handle)
    job.finish()


if __name__ == "__main__":
    main()

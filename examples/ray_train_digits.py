"""An MLP on scikit-learn's digits, trained with thrifty.train inside Ray Train's TorchTrainer.

Run:  python examples/ray_train_digits.py --workers 1 2 --storage /tmp/ray-digits
      (starts Ray on this machine; --address HOST:PORT joins a running cluster instead)

Ray Train starts the function on as many of 1 to 2 workers as it finds, and after a failure, a lost
node or a resize starts it again on a new worker group; thrifty then resumes from its own checkpoint
(in the run's folder under --storage) and splits the batch anew for the new number of workers.

Diff from plain Ray Train + PyTorch (prepare_model, prepare_data_loader, Ray checkpoints):

     def train_func(config):
    +    job = thrifty.train.ray_train.init(config["ckpt"], config["report"])
    -    model = ray.train.torch.prepare_model(model)
    +    model = job.parallel(model, optimizer)
    -    loader = ray.train.torch.prepare_data_loader(DataLoader(train, 32, shuffle=True))
    +    loader = job.loader(train, batch_size=32, max_batch_size=512)
    -    start = restore(ray.train.get_checkpoint(), model, optimizer)
    -    for epoch in range(start, config["epochs"]):
    -        loader.sampler.set_epoch(epoch)
    +    for epoch in job.epochs(config["epochs"]):
             ...
    -        ray.train.report(metrics, checkpoint=save(model, optimizer, epoch))
    +    job.finish()
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np
import ray
import torch
import torch.nn.functional as F
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train.ray_train


def train_func(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker; rank 0's return value becomes the run's `Result.return_value`."""
    job = thrifty.train.ray_train.init(config.get("ckpt"), config.get("report"),
                                       report_interval_s=1.0)
    start = {"start_epoch": job.epoch, "start_step": job.step,
             "world_size": job.env.world_size}
    x, y = torch.tensor(config["images"]), torch.tensor(config["labels"])
    train = TensorDataset(x[:1500], y[:1500])
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model = job.parallel(model, optimizer)
    loader = job.loader(train, batch_size=32, max_batch_size=512)
    for epoch in job.epochs(config["epochs"]):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        if job.env.rank == 0:
            print(f"epoch {epoch} on {job.env.world_size} workers, batch {loader.batch_size}",
                  flush=True)
    with torch.no_grad():
        accuracy = float((model(x[1500:]).argmax(1) == y[1500:]).float().mean())
    job.finish()
    return {**start, "test_accuracy": accuracy, "batch_size": loader.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs=2, default=(1, 2), metavar=("MIN", "MAX"),
                        help="elastic range of Ray Train workers (1 CPU each)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--storage", default=None,
                        help="RunConfig storage_path: a folder every node shares (absolute)")
    parser.add_argument("--name", default="ray-train-digits", help="Ray Train run name")
    parser.add_argument("--ckpt", default=None,
                        help="checkpoint folder every node shares (default: in the run's folder)")
    parser.add_argument("--report", default=None, help="GoodputModel report file or http URL")
    parser.add_argument("--max-failures", type=int, default=3,
                        help="worker-group restarts Ray Train allows (failures, lost nodes)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: start one)")
    args = parser.parse_args()

    ray.init(address=args.address)
    raw = load_digits()  # 1,797 8×8 images bundled with scikit-learn: small enough to send along
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            "images": (raw.data / 16.0).astype(np.float32),
            "labels": raw.target.astype(np.int64),
            "epochs": args.epochs,
            "ckpt": os.path.abspath(args.ckpt) if args.ckpt else None,
            "report": args.report if not args.report or "://" in args.report
            else os.path.abspath(args.report),  # workers run in folders of Ray's choosing
        },
        scaling_config=ScalingConfig(
            num_workers=tuple(args.workers),
            elastic_resize_monitor_interval_s=10.0,  # look for more free CPUs every 10 s
        ),
        run_config=RunConfig(
            name=args.name,
            storage_path=os.path.abspath(args.storage) if args.storage else None,
            failure_config=FailureConfig(max_failures=args.max_failures),
        ),
    )
    result = trainer.fit()
    print("result:", json.dumps(result.return_value), flush=True)


if __name__ == "__main__":
    main()

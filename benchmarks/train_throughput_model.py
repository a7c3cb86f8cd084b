"""Does the online throughput model predict the step time of a batch size it has not run?

One replica trains the mnist1d CNN through thrifty.train at two micro-batch sizes, fits the
throughput model to what it measured (exactly as a running job does), predicts the step time at
batch sizes it never ran, then runs them and prints the prediction error (target: within 15 %).

Run:  python benchmarks/train_throughput_model.py [--steps 60 --trials 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import thrifty.train
from thrifty.goodput.throughput import step_time
from thrifty.train.profile import StepProfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from mnist1d_cnn import CNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    job = thrifty.train.init(adapt_every=10**9)  # measure only; never switch by itself
    gen = torch.Generator().manual_seed(0)
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.randn(100_000, 1, 40, generator=gen),
                         torch.randint(0, 10, (100_000,), generator=gen))
    model = CNN(channels=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wrapped = job.parallel(model, optimizer)
    loader = job.loader(data, batch_size=16, max_batch_size=1024, local_bsz_bounds=(1, 1024))
    batches = iter(loader)

    def run(atomic: int) -> list[float]:
        loader.set_config(atomic, 0)
        seconds = []
        for step in range(args.steps + 1):  # the first step still has the old size
            start = time.perf_counter()
            x, y = next(batches)
            optimizer.zero_grad()
            F.cross_entropy(wrapped(x), y).backward()
            optimizer.step()
            if step > 3:
                seconds.append(time.perf_counter() - start)
        return seconds

    errors: list[float] = []
    for trial in range(args.trials):
        job.profile = StepProfile()  # each trial learns from scratch
        for atomic in (16, 128):
            run(atomic)
        params = job.profile.fit()
        assert params is not None
        print(f"trial {trial}: fitted on micro-batches 16 and 128: "
              f"alpha_c={params.alpha_c * 1e3:.2f} ms, beta_c={params.beta_c * 1e6:.1f} us/sample")
        for atomic in (48, 256):
            predicted = float(step_time(params, 1, 1, atomic))
            measured = statistics.median(run(atomic))
            error = abs(predicted - measured) / measured
            errors.append(error)
            print(f"  unseen batch {atomic:4d}: predicted {predicted * 1e3:6.2f} ms, "
                  f"measured {measured * 1e3:6.2f} ms (median), error {error:.1%}")
    print(f"median error {statistics.median(errors):.1%}, worst {max(errors):.1%} "
          "(target <= 15%)")
    np.random.seed(0)
    job.finish()


if __name__ == "__main__":
    main()

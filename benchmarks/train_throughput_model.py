"""Does the online throughput model predict the step time of a batch size it has not run?

One replica trains the mnist1d CNN through thrifty.train. Each trial runs the micro-batch sizes
to fit on and the unseen ones in rounds, in a shuffled order, `--steps` steps per visit: a job
that adapts also comes back to sizes it ran before, and a shared machine's speed drifts by tens
of percent over seconds, so sizes measured in one short window each would compare moments of the
machine, not batch sizes. The throughput model is fitted, exactly as a running job fits it, to
what the job's own StepProfile recorded at the fitted sizes only; it then predicts the unseen
sizes, whose measured step time is the median over all their steps past warm-up (stopwatch around
loading, forward, backward and update). Target: within 15 %.

A/A noise: the same size's median over even rounds against odd rounds, what the machine alone
makes two measurements of one batch size differ by. `--curve` prints the raw step-time curve
over 8..512 and how far the model, fitted to all of it or to the fitted sizes only, is from it.
`--rounds 1 --order fixed` is a single window per size, fitted sizes first. Many short visits
(12 x 10 steps) spread every size over the whole trial, so drift reaches all sizes alike.
`--glibc-default` trains with glibc's own malloc thresholds (thrifty.train.memory explains why
init changes them): large batches then page-fault their activations on every step.

Run:  python benchmarks/train_throughput_model.py [--trials 5 --rounds 12 --steps 10 --curve]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import thrifty.train
from thrifty.goodput.throughput import ThroughputParams, fit_throughput, step_time
from thrifty.train.profile import StepProfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from mnist1d_cnn import CNN

WARMUP = 2  # steps of each visit left out of the measured median, as the profile leaves them
CURVE = (8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class Bench:
    """One replica training the CNN, able to run any micro-batch size for a few steps."""

    def __init__(self, keep_freed_memory: bool) -> None:
        # measure only; never switch by itself
        self.job = thrifty.train.init(adapt_every=10**9, keep_freed_memory=keep_freed_memory)
        gen = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(100_000, 1, 40, generator=gen),
                             torch.randint(0, 10, (100_000,), generator=gen))
        model = CNN(channels=64)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        self.model = self.job.parallel(model, self.optimizer)
        self.loader = self.job.loader(data, batch_size=16, max_batch_size=1024,
                                      local_bsz_bounds=(1, 1024))
        self.batches = self._forever()

    def _forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.loader
            self.loader.end_epoch()

    def visit(self, atomic: int, steps: int) -> list[float]:
        """Seconds of each step after warm-up, `steps` steps at micro-batch `atomic`."""
        self.loader.set_config(atomic, 0)
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            x, y = next(self.batches)
            self.optimizer.zero_grad()
            F.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()
            seconds.append(time.perf_counter() - start)
        return seconds[WARMUP:]


def run_rounds(
    bench: Bench, sizes: Sequence[int], rounds: int, steps: int, order: str, rng: random.Random
) -> dict[int, list[list[float]]]:
    """Step times per size and round, every size visited once per round."""
    times: dict[int, list[list[float]]] = {size: [] for size in sizes}
    for _ in range(rounds):
        visit = list(sizes)
        if order == "shuffled":
            rng.shuffle(visit)
        for size in visit:
            times[size].append(bench.visit(size, steps))
    return times


def run_queue_wait() -> float | None:
    """Seconds this thread has waited for a CPU behind other programs (Linux; None elsewhere):
    the share of a trial spent waiting says how busy the machine was while it was measured."""
    try:
        with open("/proc/thread-self/schedstat") as handle:
            return int(handle.read().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return None


def median_of(rounds: list[list[float]]) -> float:
    return statistics.median(t for steps in rounds for t in steps)


def aa_noise(rounds: list[list[float]]) -> float | None:
    """Relative difference between the medians of even and odd rounds (None for one round)."""
    if len(rounds) < 2:
        return None
    even, odd = median_of(rounds[0::2]), median_of(rounds[1::2])
    return abs(even - odd) / min(even, odd)


def fit_sizes(profile: StepProfile, sizes: Sequence[int]) -> ThroughputParams:
    """The job's own fit, restricted to what it would have measured before the unseen sizes."""
    seen = [o for o in profile.observations() if o.atomic_bsz in sizes]
    return fit_throughput(seen)


def predict(params: ThroughputParams, atomic: int) -> float:
    return float(step_time(params, 1, 1, atomic))


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1%}"


def trial(bench: Bench, args: argparse.Namespace, rng: random.Random) -> tuple[list, list]:
    bench.job.profile = StepProfile()  # each trial learns from scratch
    waited, start = run_queue_wait(), time.perf_counter()
    times = run_rounds(bench, args.fit + args.unseen, args.rounds, args.steps, args.order, rng)
    if waited is not None:
        share = (run_queue_wait() - waited) / (time.perf_counter() - start)  # type: ignore[operator]
        print(f"  waited for a CPU behind other programs {share:.0%} of the trial")
    params = fit_sizes(bench.job.profile, args.fit)
    print(f"  fitted on {args.fit}: alpha_c={params.alpha_c * 1e3:.2f} ms, "
          f"beta_c={params.beta_c * 1e6:.1f} us/sample")
    errors, noise = [], []
    for size in args.fit:
        noise.append(aa_noise(times[size]))
    for size in args.unseen:
        predicted, measured = predict(params, size), median_of(times[size])
        errors.append(abs(predicted - measured) / measured)
        noise.append(aa_noise(times[size]))
        print(f"  unseen {size:4d}: predicted {predicted * 1e3:6.2f} ms, measured "
              f"{measured * 1e3:6.2f} ms, error {errors[-1]:5.1%} (A/A {fmt(noise[-1])})")
    return errors, [n for n in noise if n is not None]


def curve(bench: Bench, args: argparse.Namespace, rng: random.Random) -> None:
    """The true step-time curve, and the model's distance from it (its shape, not noise)."""
    bench.job.profile = StepProfile()
    times = run_rounds(bench, CURVE, args.rounds, args.steps, "shuffled", rng)
    everything = fit_sizes(bench.job.profile, CURVE)
    only = fit_sizes(bench.job.profile, args.fit)
    named = "/".join(map(str, args.fit))
    print(f"curve ({args.rounds} rounds x {args.steps} steps per size; model fitted to all "
          f"sizes, or to {named} only):")
    for size in CURVE:
        measured = median_of(times[size])
        print(f"  {size:4d}: median {measured * 1e3:6.2f} ms  ({measured / size * 1e6:6.1f} "
              f"us/sample)  A/A {fmt(aa_noise(times[size]))}  fit-all "
              f"{predict(everything, size) / measured - 1:+6.1%}  fit-{named} "
              f"{predict(only, size) / measured - 1:+6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per visit of a size")
    parser.add_argument("--rounds", type=int, default=12, help="visits of every size per trial")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--fit", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--unseen", type=int, nargs="+", default=[48, 256])
    parser.add_argument("--order", choices=("shuffled", "fixed"), default="shuffled")
    parser.add_argument("--curve", action="store_true", help="also print the raw curve 8..512")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave glibc's malloc thresholds as they are (init's "
                             "keep_freed_memory=False), to compare")
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must exceed the {WARMUP} warm-up steps of each visit")
    rng = random.Random(args.seed)
    bench = Bench(keep_freed_memory=not args.glibc_default)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.curve:
        curve(bench, args, rng)
    errors: list[float] = []
    noise: list[float] = []
    for number in range(args.trials):
        print(f"trial {number}:")
        found, aa = trial(bench, args, rng)
        errors += found
        noise += aa
    if errors:
        within = sum(error <= 0.15 for error in errors)
        print(f"model error over {len(errors)} predictions: median "
              f"{statistics.median(errors):.1%}, worst {max(errors):.1%} (target <= 15%), "
              f"{within} within 15%")
    if noise:
        print(f"A/A noise (same size, even vs odd rounds) over {len(noise)} pairs: median "
              f"{statistics.median(noise):.1%}, worst {max(noise):.1%}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    bench.job.finish()


if __name__ == "__main__":
    main()

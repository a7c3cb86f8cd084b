"""Record learning curves of the three examples' models over a hyperparameter grid.

Each (configuration, seed) is a real `thrifty.train` job in this process: `init` with a fresh
checkpoint folder, `job.parallel`, `job.loader`, `job.epochs`, as in examples/digits_mlp.py. The
loader is given no `max_batch_size`, so the batch stays at the configured size and the curve is a
function of the configuration alone (an adaptive batch would make it depend on the measured
throughput of this machine). One torch thread; the epoch's training is timed with
`time.perf_counter`, evaluation excluded.

The grid: 6 learning rates log-spaced from 1e-4 to 3e-1, batch sizes 16/64/256, three widths
per model and weight decay 0/1e-4/1e-2. `--jobs N` takes the first N configurations of one fixed
shuffle of the full grid, alternating models, so a larger N extends a smaller one. Rows are
appended a curve at a time and configurations already complete in `--out` are skipped, so a long
recording can be stopped and continued with the same command.

    nice -n 19 python benchmarks/tune_record_curves.py --jobs 300 --seeds 2 \
        --out src/thrifty/tune/data/curves.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train
from thrifty.tune.curves import HEADER, Config

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from digits_mlp import digits
from mnist1d_cnn import CNN
from mnist1d_cnn import data as mnist1d_data

LEARNING_RATES = [1e-4, 4.96e-4, 2.46e-3, 1.22e-2, 6.05e-2, 3e-1]  # geomspace(1e-4, 0.3, 6)
BATCH_SIZES = [16, 64, 256]
WEIGHT_DECAYS = [0.0, 1e-4, 1e-2]
WIDTHS = {"digits-mlp": [32, 128, 512], "digits-cnn": [8, 16, 32], "mnist1d-cnn": [16, 32, 64]}
DEFAULT_EPOCHS = {"digits-mlp": 12, "digits-cnn": 12, "mnist1d-cnn": 10}
GRID_SEED = 20261204


def curve_key(config: Config, seed: int) -> tuple[str, str, int, int, str, int]:
    """The identity of a curve as the CSV spells it (floats as written)."""
    return (config.model, sig(config.lr), config.batch_size, config.width,
            sig(config.weight_decay), seed)


def sig(value: float, places: int = 4) -> str:
    """`value` to `places` significant digits, shortest form; non-finite as `inf`."""
    if not math.isfinite(value):
        return "inf"
    return f"{value:.{places}g}"


# --- data and models: the examples' own (digits_mlp.py, digits_cnn.py, mnist1d_cnn.py) ---------

_DATA: dict[str, tuple[TensorDataset, TensorDataset]] = {}


def build(model: str, width: int) -> nn.Module:
    if model == "digits-mlp":
        return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    if model == "digits-cnn":
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 2 * 2, 10),
        )
    return CNN(width)


def data(model: str) -> tuple[TensorDataset, TensorDataset]:
    if model not in _DATA:
        loaders: dict[str, Callable[[], tuple[TensorDataset, TensorDataset]]] = {
            "digits-mlp": lambda: digits(images=False),
            "digits-cnn": lambda: digits(images=True),
            "mnist1d-cnn": mnist1d_data,
        }
        _DATA[model] = loaders[model]()
    return _DATA[model]


# --- one curve --------------------------------------------------------------------------------


def record(config: Config, seed: int, epochs: int) -> list[list[str]]:
    """Train `config` from `seed` for `epochs` and return its CSV rows, one per epoch."""
    train, test = data(config.model)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="thrifty-curve-") as folder:
        job = thrifty.train.init(folder, seed=seed, num_threads=1)
        model = build(config.model, config.width)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        wrapped = job.parallel(model, optimizer, lr_scheduler=scheduler)
        loader = job.loader(train, batch_size=config.batch_size)  # fixed batch: no adaptation
        x_test, y_test = test.tensors
        for epoch in job.epochs(epochs):
            samples = 0
            start = time.perf_counter()
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(wrapped(x), y).backward()
                optimizer.step()
                samples += len(y)
            epoch_s = time.perf_counter() - start
            scheduler.step()
            model.eval()
            with torch.no_grad():
                logits = model(x_test)
                loss = F.cross_entropy(logits, y_test).item()
                accuracy = (logits.argmax(1) == y_test).float().mean().item()
            model.train()
            if not math.isfinite(loss):
                loss = math.inf  # a diverged run: its accuracy is still what the model scores
            rows.append([
                config.model, sig(config.lr), str(config.batch_size), str(config.width),
                sig(config.weight_decay), str(seed), str(epoch + 1), sig(accuracy),
                sig(loss, 5), sig(max(epoch_s, 1e-6), 4), str(samples),
            ])
        job.finish()
    return rows


# --- the grid and the file --------------------------------------------------------------------


def grid(models: list[str]) -> list[Config]:
    """Every model's full grid in one fixed shuffle, models alternating."""
    rng = random.Random(GRID_SEED)
    per_model: list[list[Config]] = []
    for model in models:
        configs = [
            Config(model, lr, batch, width, wd)
            for lr in LEARNING_RATES for batch in BATCH_SIZES
            for width in WIDTHS[model] for wd in WEIGHT_DECAYS
        ]
        rng.shuffle(configs)
        per_model.append(configs)
    return [c for group in zip(*per_model, strict=True) for c in group]


def done(path: Path) -> set[tuple[str, str, int, int, str, int]]:
    """The (configuration, seed) keys whose curves are already in `path`."""
    if not path.exists():
        return set()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != HEADER:
            sys.exit(f"{path}: header is {reader.fieldnames}, expected {HEADER}: "
                     "pick another --out")
        return {
            (r["model"], r["lr"], int(r["batch_size"]), int(r["width"]), r["weight_decay"],
             int(r["seed"]))
            for r in reader
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="configurations to record")
    parser.add_argument("--models", default=",".join(WIDTHS), help="comma-separated")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per configuration")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per curve (default: 12 for digits, 10 for mnist1d)")
    parser.add_argument("--out", type=Path, default=Path("src/thrifty/tune/data/curves.csv"))
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(WIDTHS))
    if unknown:
        sys.exit(f"--models: unknown {unknown}; choose from {sorted(WIDTHS)}")
    torch.set_num_threads(1)
    configs = grid(models)[: args.jobs]
    have = done(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fresh = not args.out.exists()
    todo = [(c, s) for c in configs for s in range(args.seeds) if curve_key(c, s) not in have]
    print(f"{len(configs)} configurations x {args.seeds} seeds: {len(todo)} curves to record, "
          f"{len(configs) * args.seeds - len(todo)} already in {args.out}", flush=True)
    start = time.perf_counter()
    with args.out.open("a", newline="") as handle:
        if fresh:
            handle.write(",".join(HEADER) + "\n")
        for index, (config, seed) in enumerate(todo, 1):
            epochs = args.epochs or DEFAULT_EPOCHS[config.model]
            began = time.perf_counter()
            rows = record(config, seed, epochs)
            handle.write("".join(",".join(row) + "\n" for row in rows))  # one curve, one write
            handle.flush()
            elapsed = time.perf_counter() - start
            print(f"[{index}/{len(todo)}] {config.model} lr={sig(config.lr)} "
                  f"bs={config.batch_size} w={config.width} wd={sig(config.weight_decay)} "
                  f"seed={seed}: acc {rows[-1][7]} in {time.perf_counter() - began:.1f}s "
                  f"(total {elapsed / 60:.1f} min)", flush=True)
    print(f"recorded {len(todo)} curves in {(time.perf_counter() - start) / 60:.1f} min "
          f"into {args.out}", flush=True)


if __name__ == "__main__":
    main()

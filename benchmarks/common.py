"""What the batch benchmarks share: their run options and how they end (JSON, failed pairs)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from thrifty.sim.batch import Outcome, failures, json_rows


def add_run_options(parser: argparse.ArgumentParser, workers: int | None = 1) -> None:
    """--workers (default `workers`; None: one per CPU), --data and --json."""
    help_workers = ("parallel processes (default: CPUs)" if workers is None else
                    f"parallel processes (default {workers}: timings without competition)")
    parser.add_argument("--workers", type=int, default=workers, help=help_workers)
    parser.add_argument("--data", type=Path, help="measured data folder (default: shared/data)")
    parser.add_argument("--json", type=Path, help="also write every run's record here")


def finish(outcomes: Sequence[Outcome], json_path: Path | None) -> bool:
    """Write the records to `json_path` if given and name every failed pair; True if any."""
    if json_path is not None:
        json_path.write_text(json.dumps({"runs": json_rows(outcomes)}, indent=2) + "\n")
    lines = failures(outcomes)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return bool(lines)

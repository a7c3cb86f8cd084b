"""Ending an example job when whoever launched it says so, by creating a file.

`thrifty demo` sizes its jobs by time rather than by epochs (a faster machine would finish a fixed
number of epochs before the policy had anything to resize): each job trains until the file given
as `--stop-file` exists, and the demo creates it once the job has had its share of CPU time. Rank 0
looks before every epoch and broadcasts what it saw, so that every replica stops at the same
epoch; the job then ends normally, as if it had trained all its epochs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

import thrifty.train

UNTIL_STOPPED = 1_000_000  # the epochs a job declares when its stop file, not a count, ends it


def told_to_stop(job: thrifty.train.Job, stop_file: Path | None) -> bool:
    """Whether rank 0 sees `stop_file` (never, without one), the same answer on every replica."""
    if stop_file is None:
        return False
    flag = torch.tensor([int(job.env.rank == 0 and stop_file.exists())])
    if job.env.distributed:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def add_stop_file(parser: object) -> None:
    """The `--stop-file` option every example takes."""
    parser.add_argument(  # type: ignore[attr-defined]
        "--stop-file", type=Path, default=None,
        help="end normally, before the next epoch, once this file exists",
    )

"""Recovering from running out of memory: a lower per-replica cap and a restart, not a crash.

A micro-batch that does not fit on this GPU kind raises PyTorch's out-of-memory error somewhere
in the user's loop. The job then lowers this kind's per-replica cap below the size that failed,
keeps it in the checkpoint folder (`local_caps.json`, beside the checkpoints, so that the next
start reads it before choosing a micro-batch) and exits with `EXIT_RESIZE`: the restart resumes
from the last checkpoint at the same total batch, accumulating more micro-steps of smaller size.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import torch

from thrifty.contract import EXIT_RESIZE

log = logging.getLogger(__name__)

CAPS_FILE = "local_caps.json"
"""Per-replica micro-batch caps learned from out-of-memory errors, by GPU kind."""


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU or host allocation failure (CUDA's error type, or the CPU allocator's message)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def read_caps(folder: Path) -> dict[str, int]:
    """The caps kept in `folder`; none when the file is missing or unreadable."""
    path = folder / CAPS_FILE
    try:
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s: %s", path, err)
        return {}


def lower_cap(folder: Path, kind: str, failed: int, minimum: int) -> int:
    """Keep a cap for `kind` of three quarters of the micro-batch that `failed` (never below
    `minimum`, never above a cap kept before); returns the cap now kept."""
    cap = max(minimum, (failed * 3) // 4)
    caps = read_caps(folder)
    caps[kind] = min(cap, caps.get(kind, cap))
    path = folder / CAPS_FILE
    tmp = path.with_name(f".{CAPS_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(caps))
    os.replace(tmp, path)
    return caps[kind]


class OutOfMemoryExit:
    """While installed, an uncaught out-of-memory error exits with `EXIT_RESIZE` instead of a
    traceback, once `on_oom` has recorded it: it returns the micro-batch that failed and the
    cap now kept, or None where it could not record anything (the error then takes its
    ordinary course)."""

    def __init__(self, on_oom: Callable[[], tuple[int, int] | None]) -> None:
        self._on_oom = on_oom
        self._previous = sys.excepthook
        sys.excepthook = self._hook

    def _hook(
        self, kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        if is_out_of_memory(error):
            recorded = self._on_oom()
            if recorded is not None:
                samples, cap = recorded
                print(
                    f"thrifty: out of memory at {samples} samples per replica; per-replica "
                    f"limit lowered to {cap}, restart to continue from the last checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_RESIZE)  # the process group may be wedged: do not wait on it
        self._previous(kind, error, trace)

    def close(self) -> None:
        sys.excepthook = self._previous

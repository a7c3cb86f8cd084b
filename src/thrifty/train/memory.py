"""Keep the memory PyTorch frees on the CPU inside the process, for the next step to reuse.

A training step frees and re-allocates the same activation buffers every time. glibc's default
malloc hands blocks over 128 KiB back to the kernel (each its own mmap, and the heap's free top
trimmed), so every step page-faults its activations afresh. On a CPU that cost grows faster than
the batch does and with how busy the host is: steps at a micro-batch of 512 ran 10-15 % slower
(benchmarks/train_throughput_model.py --curve, with and without --glibc-default) and bent the
step-time curve away from the linear compute model the scheduler fits, so predictions for unseen
batch sizes drifted. Raising glibc's mmap and trim thresholds keeps
freed blocks for reuse; the process's resident memory then stays at its peak, which a training
loop reaches on every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: as high as it goes


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )

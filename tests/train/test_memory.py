"""thrifty.train keeps freed buffers in the process: big blocks no longer come from the kernel."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import thrifty.train

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's"
)

# Prints how many bytes of an 8 MiB block glibc served by its own mmap (mallinfo2's hblkhd).
PROBE = """
import ctypes, sys
from thrifty.train.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
block = libc.malloc(8 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


def mmapped_bytes(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_a_big_block_is_mapped_afresh_by_default_and_taken_from_the_heap_once_kept() -> None:
    assert mmapped_bytes("default") >= 8 << 20
    assert mmapped_bytes("kept") == 0


def test_init_keeps_freed_memory_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(thrifty.train.memory, "keep_freed_memory", lambda: calls.append(True))
    thrifty.train.init(keep_freed_memory=False).finish()
    assert calls == []
    thrifty.train.init().finish()
    assert calls == [True]

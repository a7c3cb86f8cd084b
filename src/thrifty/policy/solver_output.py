"""Keep the HiGHS library's debug prints out of thrifty's output.

HiGHS (scipy's `milp`) writes lines such as `HighsMipSolverData::transformNewIntegerFeasibleSolution
tmpSolver.run();` with C `printf`, straight to file descriptor 1: its `output_flag` and
`log_to_console` options do not reach them, nor does `sys.stdout`. So around a solve, descriptor 1
points at a temporary file; afterwards every line that is not HiGHS's chatter is written to the
real stdout, so that what another thread printed meanwhile is delayed, never lost. One solve at a
time holds the descriptor (a lock), which is all the simulator and the scheduling loop need.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

_HIGHS_PREFIXES = (b"Highs", b"HiGHS")  # class or library name: the debug lines start so
_lock = threading.Lock()


def _is_chatter(line: bytes) -> bool:
    return line.lstrip().startswith(_HIGHS_PREFIXES)


@contextlib.contextmanager
def quiet_solver() -> Iterator[None]:
    """Run the body with descriptor 1 captured; pass on everything but HiGHS's own lines."""
    with _lock:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        try:
            saved = os.dup(1)
        except OSError:  # no stdout at all: nothing to keep clean
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 1)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)
                capture.seek(0)
                kept = b"".join(line for line in capture if not _is_chatter(line))
                if kept:
                    os.write(1, kept)

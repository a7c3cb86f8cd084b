"""Turning "please stop" into a checkpoint at the next step boundary and a resize exit code.

A scheduler that re-allocates a job sends SIGTERM (an interactive user, SIGINT). Stopping in the
middle of a step would lose the step, and stopping without a checkpoint would lose everything since
the last one, so the handler only raises a flag; the training step checks it, all replicas agree
on it (any replica that saw the signal stops them all, since a shell or launcher in between may
deliver it to only some, or to none: see `StopSignal`), they checkpoint together and exit with
`EXIT_RESIZE`, which tells the executor "restart me, possibly elsewhere", not "I failed".
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from types import FrameType

from thrifty.contract import EXIT_RESIZE

__all__ = ["EXIT_RESIZE", "PARENT_DEATH", "StopSignal"]

log = logging.getLogger(__name__)


PARENT_DEATH = signal.SIGUSR2
"""Delivered by the kernel when the launching process dies (see `StopSignal`)."""

_PR_SET_PDEATHSIG = 1


def _ask_for_parent_death_signal() -> bool:
    """Have Linux send PARENT_DEATH to this process when its parent dies (prctl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class StopSignal:
    """Records SIGTERM/SIGINT instead of dying, restoring the previous handlers on `close`.

    A shell or launcher between the executor and this process may die of the signal without
    passing it on (`sh -c "python train.py; ..."` does). The kernel then sends PARENT_DEATH, and a
    changed parent (the process was re-parented) counts as a stop request too. The parent-death
    signal also fires when merely the launching *thread* ends; the parent is unchanged then, and
    the signal is ignored.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.requested: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._parent = os.getppid()
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: stop signals will not be caught")
            return
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        if signal.getsignal(PARENT_DEATH) is signal.SIG_DFL:
            self._previous[PARENT_DEATH] = signal.signal(PARENT_DEATH, self._parent_died)
            _ask_for_parent_death_signal()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.requested = signal.Signals(signum)

    def _parent_died(self, signum: int, frame: FrameType | None) -> None:
        if os.getppid() != self._parent and self.requested is None:
            self.requested = signal.SIGTERM

    def close(self) -> None:
        if PARENT_DEATH in self._previous and sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

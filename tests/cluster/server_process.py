"""`thrifty server` as a child process, for the tests that need the real command: its own port,
home and environment, started and killed like a deployed server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from thrifty.cluster.local import free_port
from thrifty.cluster.schema import Attempt
from thrifty.cluster.store import Store

PY = sys.executable


class Server:
    """`thrifty server` as a child process on its own port and home. `env` is what the process
    gets (its replicas the allow-listed part); change it before `start` to run it otherwise.
    `isolation`: its `--isolation`."""

    def __init__(self, home: Path, isolation: str = "sandbox") -> None:
        self.home, self.port, self.isolation = home, free_port(), isolation
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("THRIFTY_DB_URL", "THRIFTY_TOKEN", "THRIFTY_SERVER")}
        self.env["THRIFTY_HOME"] = str(home)
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.home / f"server-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [PY, "-m", "thrifty.cli", "server", "--port", str(self.port), "--slots", "2",
             "--interval", "0.5", "--isolation", self.isolation, "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"the server did not come up:\n{self.output()}")

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("server-*")))

    def kill(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def close(self) -> None:
        """Stop the server if it still runs and kill what it left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        leftover_replicas(self.home)


def leftover_replicas(home: Path) -> None:
    """Kill replicas of attempts still open, so a failing test leaves nothing running."""
    store = Store(f"sqlite:///{home / 'thrifty.db'}")
    with store.session() as s:
        handles = [a.handle for a in s.scalars(select(Attempt).where(Attempt.ended_at.is_(None)))]
    store.close()
    for handle in handles:
        for pid in handle.get("pids", []):
            with contextlib.suppress(OSError):
                if b"thrifty.cluster.replica" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)

"""The keeper of one replica on a Ray node: the actor class the Ray executor places there.

This module imports nothing from thrifty (only the standard library, and Ray inside the actor):
the driver registers it with cloudpickle by value, so a keeper reaches its node as code and
starts in the time a bare Ray worker takes, instead of importing thrifty (and with it PyTorch,
seconds per process) on every node. `free_port` lives here for the same reason; the local
executor uses it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Taken from the environment a replica's launcher runs in (the server's, a Ray worker's) for the
# replica; everything else (THRIFTY_TOKEN, THRIFTY_DB_URL, THRIFTY_HOME, cloud credentials, ...)
# stays behind. PYTHONPATH, LD_LIBRARY_PATH and CUDA_VISIBLE_DEVICES say where code and GPUs are,
# never a secret.
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "LD_LIBRARY_PATH",
              "CUDA_VISIBLE_DEVICES")


def job_environment(launcher_env: Mapping[str, str], job_env: Mapping[str, str]) -> dict[str, str]:
    """A replica's environment: the allow-listed part of its launcher's, then `job_env` (the
    spec's `env`, the launcher's and thrifty's variables for this attempt, its HOME)."""
    passed = {k: v for k, v in launcher_env.items()
              if (k in PASSED_ENV or k.startswith("LC_")) and not k.startswith("THRIFTY_")}
    return {**passed, **job_env}


PYTHON = "{python}"  # in a replica's command: the Python that Ray runs on the replica's node

# Started before the job's command: ask the kernel to end it (SIGTERM) when its keeper dies, so a
# replica never outlives the actor that answers for it, then become the command. thrifty.train
# replaces this with its own parent-death handling (a checkpoint first).
_SHIM = """\
import ctypes, os, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
try:
    ctypes.CDLL(None).prctl(1, 15, 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(75)
try:
    os.execvp(argv[0], argv)
except OSError as err:
    print(f"thrifty: cannot start {argv[0]}: {err}", file=sys.stderr, flush=True)
    sys.exit(127)
"""


def free_port() -> int:
    """A TCP port free on every address of this machine (the rendezvous listens on all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def interface_of(ip: str) -> str | None:
    """The network interface holding `ip` (Linux), for GLOO/NCCL_SOCKET_IFNAME.

    Without it gloo resolves the host name, which on many machines means an address peers on
    other nodes cannot reach (or, on one machine with several loopback nodes, the wrong one).
    """
    if ip.startswith("127."):
        return "lo"
    try:
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _, name in socket.if_nameindex():
                with contextlib.suppress(OSError):
                    raw = fcntl.ioctl(sock.fileno(), 0x8915,  # SIOCGIFADDR
                                      struct.pack("256s", name[:15].encode()))
                    if socket.inet_ntoa(raw[20:24]) == ip:
                        return name
    except (ImportError, OSError):
        return None
    return None


class Keeper:
    """Keeps one replica on its node: starts its process, reports on it, stops it.

    Runs as a Ray actor; every method returns at once (a stop's grace runs on a timer), so one
    slow call never holds up a poll of the whole attempt.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.code: int | None = None  # set when the command could not even start
        self.report_dir: Path | None = None
        self._killer: threading.Timer | None = None

    def describe(self, rendezvous: bool) -> dict[str, Any]:
        """Where this keeper runs; rank 0's also picks the rendezvous port and report file."""
        import ray  # present wherever this runs: inside a Ray actor

        ip = ray.util.get_node_ip_address()
        info: dict[str, Any] = {
            "ip": ip,
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "ifname": interface_of(ip),
            "pid": os.getpid(),
        }
        if rendezvous:
            self.report_dir = Path(tempfile.mkdtemp(prefix="thrifty-report-"))
            info["port"] = free_port()
            info["report"] = str(self.report_dir / "report.json")
        return info

    def start(self, argv: list[str], cwd: str, env: dict[str, str], log_path: str) -> int:
        """Start the command (in a process group of its own) with the allow-listed part of this
        node's environment, `env` over it and a HOME of its own beside its logs; returns its
        pid, 0 if it could not start (status() then says 127)."""
        if self.proc is not None or self.code is not None:
            return self.proc.pid if self.proc else 0
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        home = path.parent.parent / "home"
        home.mkdir(exist_ok=True)
        env = job_environment(os.environ, {**env, "HOME": str(home)})
        argv = [sys.executable if part == PYTHON else part for part in argv]
        command = [sys.executable, "-c", _SHIM, str(os.getpid()), *argv]
        with open(path, "ab") as out:
            try:
                self.proc = subprocess.Popen(command, cwd=cwd, env=env,
                                             stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             process_group=0)
            except OSError as err:
                out.write(f"thrifty: cannot start {argv[0]} in {cwd}: {err}\n".encode())
                self.code = 127
                return 0
        return self.proc.pid

    def status(self) -> int | None:
        """The exit status (128 + N when killed by signal N), None while it runs."""
        if self.code is not None or self.proc is None:
            return self.code
        code = self.proc.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def report(self) -> dict[str, Any] | None:
        if self.report_dir is None:
            return None
        try:
            data = json.loads((self.report_dir / "report.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def terminate(self, grace_s: float) -> int | None:
        """SIGTERM the replica's process group now, SIGKILL it after `grace_s` seconds."""
        if grace_s <= 0:
            self._signal(signal.SIGKILL)
            return self.status()
        self._signal(signal.SIGTERM)
        if self._killer is None and self.status() is None:
            self._killer = threading.Timer(grace_s, self._signal, (signal.SIGKILL,))
            self._killer.daemon = True
            self._killer.start()
        return self.status()

    def cleanup(self) -> None:
        """Before the keeper is killed: nothing of the replica may outlive it."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self.report_dir is not None:
            shutil.rmtree(self.report_dir, ignore_errors=True)

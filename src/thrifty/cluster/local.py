"""The embedded executor: this machine as a one-node cluster.

Its GPUs if it has any (one replica per GPU, pinned with CUDA_VISIBLE_DEVICES), otherwise CPU
slots (one replica per slot, one PyTorch thread each). Replicas are processes with the
torch.distributed environment set, as torchrun would set it, started through
`thrifty.cluster.replica` so that they outlive a crashed control plane and can be adopted again.
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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thrifty.cluster.executor import LOST, AttemptStatus, Handle, Launch
from thrifty.errors import ThriftyError
from thrifty.policy.base import NodeView


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def count_gpus() -> int:
    """GPUs visible to this machine, without importing a GPU library into the control plane."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def _start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks), which tells a reused pid from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent's wait is missing
        return None
    return int(fields[19])


def read_report(path: str | None) -> dict[str, Any] | None:
    """The newest report a job wrote (replaced atomically, so never half a file)."""
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class LocalExecutor:
    """Runs replicas as local processes. `slots` caps CPU replicas (default: one per core)."""

    name = "local"

    def __init__(self, slots: int | None = None, gpu_kind: str | None = None,
                 node_name: str = "local") -> None:
        gpus = count_gpus()
        self.kind = "cpu" if gpus == 0 else (gpu_kind or os.environ.get("THRIFTY_GPU_KIND", "gpu"))
        self.capacity = gpus or slots or os.cpu_count() or 1
        if self.capacity < 1:
            raise ThriftyError(f"slots must be at least 1, got {slots}")
        self.node_name = node_name
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._busy_devices: dict[str, list[int]] = {}

    def nodes(self) -> tuple[NodeView, ...]:
        return (NodeView(self.node_name, self.kind, self.capacity),)

    def _devices(self, job_key: str, count: int) -> list[int]:
        used = {d for devices in self._busy_devices.values() for d in devices}
        free = [d for d in range(self.capacity) if d not in used][:count]
        self._busy_devices[job_key] = free
        return free

    def launch(self, launch: Launch) -> Handle:
        replicas = launch.allocation.num_replicas
        if set(launch.allocation.gpus) != {self.node_name}:
            raise ThriftyError(
                f"the local executor has one node, {self.node_name!r}; got an allocation on "
                f"{sorted(launch.allocation.gpus)}"
            )
        launch.log_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(launch.spec.working_dir)
        port = free_port()
        key = f"{launch.job_id}/{launch.attempt}"
        devices = self._devices(key, replicas) if self.kind != "cpu" else []
        report = launch.log_dir.parent / "report.json"
        handle: Handle = {"key": key, "pids": [], "starts": [], "exit_files": [],
                          "devices": devices, "report": str(report)}
        base = {**os.environ, **launch.spec.env, **launch.env, "THRIFTY_REPORT": str(report)}
        for rank in range(replicas):
            env = {
                **base,
                "RANK": str(rank), "WORLD_SIZE": str(replicas),
                "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(replicas),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "THRIFTY_GPU_KIND": self.kind,
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            }
            if devices:
                env["CUDA_VISIBLE_DEVICES"] = str(devices[rank])
            exit_file = launch.log_dir / f".attempt-{launch.attempt}-rank-{rank}.exit"
            exit_file.unlink(missing_ok=True)
            command = [sys.executable, "-m", "thrifty.cluster.replica", str(exit_file), "--",
                       *launch.spec.entrypoint.argv(sys.executable)]
            with open(launch.log_path(rank), "ab") as log:
                try:
                    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
                except OSError as err:
                    self.stop([handle], grace_s=0)
                    raise ThriftyError(
                        f"job {launch.job_id}: cannot start replica {rank} in {workdir}: {err}"
                    ) from err
            self._children[proc.pid] = proc
            handle["pids"].append(proc.pid)
            handle["starts"].append(_start_time(proc.pid))
            handle["exit_files"].append(str(exit_file))
        return handle

    def _exit_code(self, handle: Handle, rank: int) -> int | None:
        pid, start = handle["pids"][rank], handle["starts"][rank]
        child = self._children.get(pid)
        if child is not None and child.poll() is None:
            return None
        exit_file = Path(handle["exit_files"][rank])
        if exit_file.is_file():
            with contextlib.suppress(ValueError, OSError):
                return int(exit_file.read_text().strip())
        if child is not None:  # the wrapper itself was killed before it could write
            return LOST
        alive = start is not None and _start_time(pid) == start
        return None if alive else LOST

    def poll(self, handle: Handle) -> AttemptStatus:
        codes = [self._exit_code(handle, rank) for rank in range(len(handle["pids"]))]
        if not any(code is None for code in codes):
            self._forget(handle)
        lost = [r for r, c in enumerate(codes) if c == LOST]
        note = f"replica(s) {lost} vanished without an exit status" if lost else ""
        return AttemptStatus(codes, note, {"report": read_report(handle.get("report"))})

    def _forget(self, handle: Handle) -> None:
        self._busy_devices.pop(handle.get("key", ""), None)
        for pid in handle["pids"]:
            self._children.pop(pid, None)

    def _signal(self, handle: Handle, sig: signal.Signals) -> None:
        for rank, pid in enumerate(handle["pids"]):
            if self._exit_code(handle, rank) is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)

    def stop(self, handles: Sequence[Handle], grace_s: float) -> None:
        for handle in handles:
            self._signal(handle, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(self.poll(h).running for h in handles):
            time.sleep(0.05)
        for handle in handles:
            if self.poll(handle).running:
                self._signal(handle, signal.SIGKILL)
                end = time.monotonic() + 5.0
                while self.poll(handle).running and time.monotonic() < end:
                    time.sleep(0.05)

    def adopt(self, handle: Handle) -> bool:
        status = self.poll(handle)
        if status.running:
            key = handle.get("key", "")
            if handle.get("devices"):
                self._busy_devices[key] = list(handle["devices"])
        return status.running

    def close(self) -> None:
        """Leave running replicas alone: a restarted control plane adopts them."""
        for child in self._children.values():
            with contextlib.suppress(Exception):
                child.poll()

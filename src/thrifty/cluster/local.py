"""The embedded executor: this machine as a one-node cluster.

Its GPUs if it has any (one replica per GPU, pinned with CUDA_VISIBLE_DEVICES), otherwise CPU
slots (one replica per slot, one PyTorch thread each). Replicas are processes with the
torch.distributed environment set, as torchrun would set it, started through
`thrifty.cluster.replica` so that they outlive a crashed control plane and can be adopted again.
Each runs with a scrubbed environment and a HOME of its own, inside a bubblewrap sandbox unless
isolation `none` was chosen (see `thrifty.cluster.sandbox`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from thrifty.cluster.executor import LOST, AnyHandle, AttemptStatus, Handle, Launch
from thrifty.cluster.ray_keeper import free_port
from thrifty.cluster.sandbox import check_isolation, job_environment, job_home
from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.policy.base import NodeView


@dataclass(frozen=True)
class LocalHandle(Handle):
    """An attempt's replica processes: pid and kernel start time each (a reused pid is told
    apart), the files their wrappers write the exit status to, the GPUs they hold."""

    pids: tuple[int, ...] = ()
    starts: tuple[int | None, ...] = ()
    exit_files: tuple[str, ...] = ()
    devices: tuple[int, ...] = ()
    report: str | None = None
    executor: ClassVar[str] = "local"


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
    """Runs replicas as local processes. `slots` caps CPU replicas (default: one per core);
    `gpu_kind` names this machine's GPUs (Settings.gpu_kind; default `gpu`). `isolation`:
    `sandbox` (bubblewrap; a ThriftyError when it cannot be had) or `none`, chosen explicitly.
    `state_dirs`: the server's state folders, hidden from jobs (the folder above a launch's
    `jobs/` folder always is)."""

    name = "local"
    shares_filesystem = True

    def __init__(self, slots: int | None = None, gpu_kind: str | None = None,
                 node_name: str = "local", isolation: str = "sandbox",
                 state_dirs: Sequence[Path] = ()) -> None:
        self.sandbox = check_isolation(isolation)
        self.isolation = isolation
        self.state_dirs = tuple(state_dirs)
        gpus = count_gpus()
        self.kind = "cpu" if gpus == 0 else (gpu_kind or "gpu")
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

    def launch(self, launch: Launch) -> LocalHandle:
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
        report = launch.log_dir.parent / "report.json"
        pids: list[int] = []
        starts: list[int | None] = []
        exit_files: list[str] = []

        def handle() -> LocalHandle:
            return LocalHandle(key, tuple(pids), tuple(starts), tuple(exit_files),
                               tuple(devices), str(report))

        job_dir = launch.log_dir.parent
        base = job_environment(os.environ, {
            **launch.spec.env, **launch.env, Env.REPORT: str(report),
            Env.ALLOCATION: launch.allocation.to_json(), "HOME": str(job_home(job_dir)),
        })
        argv = self._confined(launch, base)
        devices = self._devices(key, replicas) if self.kind != "cpu" else []
        for rank in range(replicas):
            env = {
                **base,
                "RANK": str(rank), "WORLD_SIZE": str(replicas),
                "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(replicas),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            }
            if devices:
                env["CUDA_VISIBLE_DEVICES"] = str(devices[rank])
            exit_file = launch.log_dir / f".attempt-{launch.attempt}-rank-{rank}.exit"
            exit_file.unlink(missing_ok=True)
            command = [sys.executable, "-m", "thrifty.cluster.replica", str(exit_file), "--",
                       *argv]
            with open(launch.log_path(rank), "ab") as log:
                try:
                    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
                except OSError as err:
                    self.stop([handle()], grace_s=0)
                    raise ThriftyError(
                        f"job {launch.job_id}: cannot start replica {rank} in {workdir}: {err}"
                    ) from err
            self._children[proc.pid] = proc
            pids.append(proc.pid)
            starts.append(_start_time(proc.pid))
            exit_files.append(str(exit_file))
        return handle()

    def _confined(self, launch: Launch, env: Mapping[str, str]) -> list[str]:
        """The replica's command line, in its sandbox when there is one."""
        argv = launch.spec.entrypoint.argv(sys.executable)
        if self.sandbox is None:
            return argv
        job_dir = launch.log_dir.parent
        checkpoints = Path(env.get(Env.CHECKPOINT_DIR) or job_dir)
        # The scheduler's layout: HOME/jobs/JOB_ID/logs, so the job folder's grandparent is the
        # state folder (database, token, every job).
        hidden = (*self.state_dirs, job_dir.parent.parent)
        return self.sandbox.wrap(argv, workdir=Path(launch.spec.working_dir), job_dir=job_dir,
                                 writable=[checkpoints], hidden=hidden, env=env)

    def _exit_code(self, handle: LocalHandle, rank: int) -> int | None:
        pid, start = handle.pids[rank], handle.starts[rank]
        child = self._children.get(pid)
        if child is not None and child.poll() is None:
            return None
        exit_file = Path(handle.exit_files[rank])
        if exit_file.is_file():
            with contextlib.suppress(ValueError, OSError):
                return int(exit_file.read_text().strip())
        if child is not None:  # the wrapper itself was killed before it could write
            return LOST
        alive = start is not None and _start_time(pid) == start
        return None if alive else LOST

    def poll(self, handle: AnyHandle) -> AttemptStatus:
        handle = LocalHandle.read(handle)
        if handle is None or not handle.pids:
            return AttemptStatus.missing()
        codes = [self._exit_code(handle, rank) for rank in range(len(handle.pids))]
        if not any(code is None for code in codes):
            self._forget(handle)
        lost = [r for r, c in enumerate(codes) if c == LOST]
        note = f"replica(s) {lost} vanished without an exit status" if lost else ""
        return AttemptStatus(codes, note, {"report": read_report(handle.report)})

    def _forget(self, handle: LocalHandle) -> None:
        self._busy_devices.pop(handle.key, None)
        for pid in handle.pids:
            self._children.pop(pid, None)

    def _signal(self, handle: LocalHandle, sig: signal.Signals) -> None:
        for rank, pid in enumerate(handle.pids):
            if self._exit_code(handle, rank) is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)

    def stop(self, given: Sequence[AnyHandle], grace_s: float) -> None:
        handles = [h for h in map(LocalHandle.read, given) if h is not None]
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

    def adopt(self, handle: AnyHandle) -> bool:
        handle = LocalHandle.read(handle)
        status = self.poll(handle)
        if status.running and handle is not None and handle.devices:
            self._busy_devices[handle.key] = list(handle.devices)
        return status.running

    def close(self) -> None:
        """Leave running replicas alone: a restarted control plane adopts them."""
        for child in self._children.values():
            with contextlib.suppress(Exception):
                child.poll()

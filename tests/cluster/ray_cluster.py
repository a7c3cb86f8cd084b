"""Loopback Ray clusters for the tests: started with `ray start`, stopped by process id only.

Every node is one `ray start` run in a session of its own, so everything it leaves behind (GCS,
raylet, Ray's side processes, the workers the raylet forks and the replicas they start) stays in
one session whose id is the `ray start` pid. Ray gives each worker a process group of its own, so
a node is the session, not a process group. Stopping a node, or losing one on purpose, signals
every process of that session by pid: never `ray stop`, which would end every Ray cluster on the
machine.

Each node gets a short temporary folder of its own (Ray puts Unix sockets there, and socket paths
are limited to 107 bytes) and explicit free ports, so that several clusters can share the machine.

As a script, for CI:

    python tests/cluster/ray_cluster.py start STATE_DIR   # prints the address, writes STATE_DIR
    python tests/cluster/ray_cluster.py stop STATE_DIR
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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
OBJECT_STORE_BYTES = 100_000_000

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # A killed node is declared dead after about 1.5 s rather than the default 15 s or more.
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
"""Environment for every Ray command and driver of the tests."""


def ray_env() -> dict[str, str]:
    return {**os.environ, **RAY_ENV}


def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _ray_command() -> str:
    """The `ray` program beside this interpreter (a virtual environment's), else on PATH."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise RuntimeError(f"no `ray` program beside {sys.executable} or on PATH; "
                           "install ray[default] into this environment")
    return found


def _session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass(frozen=True)
class RayNode:
    """One node of a loopback cluster: its address and the session holding its processes."""

    ip: str
    sid: int
    temp_dir: str
    head: bool = False

    def pids(self) -> list[int]:
        """Live processes of this node; empty once it is gone.

        The session is ours only while one of its processes names our temp folder (the raylet
        does): a session id can be reused once all its members are gone.
        """
        members = _session_members(self.sid)
        if any(self.temp_dir in _cmdline(pid) for pid in members):
            return members
        return []

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 15.0) -> None:
        """Signal every process of the node, as a machine that vanishes would end them, and
        wait until they are gone (SIGKILL for what outlives a gentler `sig`)."""
        if not self.pids():
            return
        _signal_all(_session_members(self.sid), sig)
        deadline = time.monotonic() + timeout_s
        while _session_members(self.sid) and time.monotonic() < deadline:
            time.sleep(0.1)
            if sig == signal.SIGKILL:  # processes forked meanwhile
                _signal_all(_session_members(self.sid), sig)
        left = _session_members(self.sid)
        if left:
            _signal_all(left, signal.SIGKILL)

    def remove_files(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_node(
    ip: str,
    *,
    address: str | None = None,
    num_cpus: int = 1,
    num_gpus: int = 0,
    labels: dict[str, str] | None = None,
    object_store_bytes: int = OBJECT_STORE_BYTES,
    timeout_s: float = 120.0,
) -> tuple[RayNode, str]:
    """Start a head (`address` None) or a node joining `address`; returns it and the address."""
    temp_dir = tempfile.mkdtemp(prefix="thr-ray-", dir="/tmp")
    command = [
        _ray_command(), "start",
        "--node-ip-address", ip,
        "--num-cpus", str(num_cpus),
        "--num-gpus", str(num_gpus),
        "--object-store-memory", str(object_store_bytes),
        "--temp-dir", temp_dir,
        "--disable-usage-stats",
        "--dashboard-agent-listen-port", str(free_port(ip)),
        "--metrics-export-port", str(free_port(ip)),
    ]
    is_head = address is None
    if address is None:
        port = free_port(ip)
        address = f"{ip}:{port}"
        command += [
            "--head", "--port", str(port),
            "--include-dashboard", "false",
            "--dashboard-port", str(free_port(ip)),
            "--ray-client-server-port", str(free_port(ip)),
        ]
    else:
        command += ["--address", address]
    if labels:
        command += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
    log = Path(temp_dir) / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=ray_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    node = RayNode(ip=ip, sid=proc.pid, temp_dir=temp_dir, head=is_head)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    if code != 0:
        node.kill()
        text = log.read_text(errors="replace")[-3000:]
        node.remove_files()
        raise RuntimeError(f"`ray start` on {ip} failed (exit {code}):\n{text}")
    return node, address


@dataclass(frozen=True)
class RayCluster:
    """A head and its nodes; `address` is what drivers pass to ray.init."""

    address: str
    nodes: tuple[RayNode, ...]

    def stop(self) -> None:
        """Workers first, then the head; then their temporary folders."""
        for node in sorted(self.nodes, key=lambda n: n.head):
            node.kill(signal.SIGTERM, timeout_s=3.0)
        for node in self.nodes:
            node.remove_files()

    def save(self, path: Path) -> None:
        data = {"address": self.address, "nodes": [asdict(n) for n in self.nodes]}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> RayCluster:
        data = json.loads(path.read_text())
        return cls(data["address"], tuple(RayNode(**n) for n in data["nodes"]))

    def alive(self) -> bool:
        return all(node.pids() for node in self.nodes)


def start_cluster(worker_ips: tuple[str, ...] = (WORKER_IP,), num_cpus: int = 1) -> RayCluster:
    """A head on HEAD_IP and one node per address in `worker_ips`, `num_cpus` CPUs each."""
    head, address = start_node(HEAD_IP, num_cpus=num_cpus)
    nodes = [head]
    try:
        for ip in worker_ips:
            node, _ = start_node(ip, address=address, num_cpus=num_cpus)
            nodes.append(node)
    except BaseException:
        RayCluster(address, tuple(nodes)).stop()
        raise
    return RayCluster(address, tuple(nodes))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: ray_cluster.py start|stop STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(argv[1])
    state = state_dir / "ray-cluster.json"
    if argv[0] == "start":
        state_dir.mkdir(parents=True, exist_ok=True)
        cluster = start_cluster()
        cluster.save(state)
        print(cluster.address)
        return 0
    if state.is_file():
        RayCluster.load(state).stop()
        state.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

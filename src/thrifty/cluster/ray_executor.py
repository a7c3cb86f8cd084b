"""The Ray executor: a Ray cluster of any size, one detached actor per replica.

Each replica has a small keeper actor pinned to its node (node affinity, holding 1 GPU there, or 1
CPU on a node without GPUs). The keeper starts the job's command as a child process with the
torch.distributed environment set, as torchrun would set it, and answers for it: exit status,
the job's report (rank 0), stop requests. Keepers are named `thrifty:{job}:{attempt}:{rank}` and
detached, so they outlive the control plane and a restarted one finds them again by name (`adopt`).

Nodes declare their GPU kind with a node label, `ray start --labels thrifty.gpu-kind=A100`, or a
custom resource, `--resources '{"gpu-kind:A100": 1}'`; otherwise Ray's own accelerator type is
used. A node without GPUs offers one CPU replica per CPU.

Requirements on the cluster: the job's own software on every node (Python, PyTorch, thrifty for
thrifty.train; keepers themselves need only Ray, they travel by value), and the job's working
directory, log folder and checkpoint folder on storage every node sees at the same path (NFS, a
cluster file system, or one machine as in the tests): a job resumed on other nodes must find its
checkpoints. Reports travel through rank 0's keeper and need no shared storage.

A lost node ends the attempt: poll reports its replicas as LOST and stops the others (they would
wait for their peer until the collective timeout), and the scheduler resumes the job from its
checkpoint on what is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray import cloudpickle
from ray.exceptions import (
    ActorDiedError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
    RayError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from thrifty.cluster.executor import LOST, AttemptStatus, Handle, Launch
from thrifty.errors import ThriftyError
from thrifty.policy.base import NodeView

log = logging.getLogger(__name__)

GPU_KIND_LABEL = "thrifty.gpu-kind"
GPU_KIND_RESOURCE = "gpu-kind:"  # a custom resource "gpu-kind:T4" marks a node of T4s
NODE_NAME_LABEL = "thrifty.node-name"
_RAY_ACCELERATOR_LABEL = "ray.io/accelerator-type"
_RAY_ACCELERATOR_RESOURCE = "accelerator_type:"

ACTOR_PREFIX = "thrifty:"
PYTHON = "{python}"  # in a replica's command: the Python that Ray runs on the replica's node
_FINISHED_KEPT = 1000

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


class Replica:
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
        """Start the command (in a process group of its own) with this node's environment and
        `env` over it; returns its pid, 0 if it could not start (status() then says 127)."""
        if self.proc is not None or self.code is not None:
            return self.proc.pid if self.proc else 0
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable if part == PYTHON else part for part in argv]
        command = [sys.executable, "-c", _SHIM, str(os.getpid()), *argv]
        with open(path, "ab") as out:
            try:
                self.proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env},
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


# Keepers are shipped to the nodes by value: a new keeper then starts in the time a bare Ray
# worker takes, instead of importing thrifty (and with it PyTorch, seconds per process) first.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
_RemoteReplica = ray.remote(max_restarts=0)(Replica)


def actor_name(job_id: str, attempt: int, rank: int) -> str:
    return f"{ACTOR_PREFIX}{job_id}:{attempt}:{rank}"


def _node_kind(node: Mapping[str, Any]) -> str | None:
    """The GPU kind a node declares, or None when it says nothing."""
    labels = node.get("Labels") or {}
    if labels.get(GPU_KIND_LABEL):
        return str(labels[GPU_KIND_LABEL])
    resources = node.get("Resources") or {}
    for prefix in (GPU_KIND_RESOURCE, _RAY_ACCELERATOR_RESOURCE):
        for key in resources:
            if key.startswith(prefix) and len(key) > len(prefix):
                return key[len(prefix):]
    if labels.get(_RAY_ACCELERATOR_LABEL):
        return str(labels[_RAY_ACCELERATOR_LABEL])
    return None


class RayExecutor:
    """Runs replicas as actors on a running Ray cluster (`address` as ray.init takes it)."""

    name = "ray"

    def __init__(
        self,
        address: str,
        namespace: str = "thrifty",
        launch_timeout_s: float = 60.0,
        poll_timeout_s: float = 2.0,
        lost_grace_s: float = 30.0,
    ) -> None:
        if not address:
            raise ThriftyError("the ray executor needs the cluster's address (host:port or auto)")
        self.address = address
        self.namespace = namespace
        self.launch_timeout_s = launch_timeout_s
        self.poll_timeout_s = poll_timeout_s
        self.lost_grace_s = lost_grace_s
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                ray.init(address=address, namespace=namespace, logging_level=logging.WARNING,
                         log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ThriftyError(
                    f"cannot connect to the Ray cluster at {address}: {err}; start it with "
                    "`ray start --head` or fix the address"
                ) from err
        self._actors: dict[str, Any] = {}
        self._finished: dict[str, AttemptStatus] = {}
        self._stopping: set[str] = set()  # attempts whose survivors were told a peer was lost
        self._alive_cache: tuple[float, set[str]] = (-math.inf, set())

    # ---- nodes ---------------------------------------------------------------------------------

    def _alive(self) -> list[dict[str, Any]]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self._alive_cache = (time.monotonic(), {n["NodeID"] for n in nodes})
        return nodes

    def _alive_ids(self, max_age_s: float = 1.0) -> set[str]:
        """Ids of the alive nodes, asked of Ray at most once a second (polls of many attempts
        in one round share the answer)."""
        if time.monotonic() - self._alive_cache[0] > max_age_s:
            self._alive()
        return self._alive_cache[1]

    def _index(self) -> dict[str, tuple[NodeView, dict[str, Any]]]:
        """Alive nodes by thrifty name: label, else IP (with the id when IPs repeat)."""
        alive = self._alive()
        ips = [n["NodeManagerAddress"] for n in alive]
        index: dict[str, tuple[NodeView, dict[str, Any]]] = {}
        for node in alive:
            ip = node["NodeManagerAddress"]
            name = (node.get("Labels") or {}).get(NODE_NAME_LABEL) or (
                ip if ips.count(ip) == 1 else f"{ip}/{node['NodeID'][:8]}")
            resources = node.get("Resources") or {}
            gpus = int(resources.get("GPU", 0))
            if gpus > 0:
                view = NodeView(name, _node_kind(node) or "gpu", gpus)
            else:
                view = NodeView(name, "cpu", int(resources.get("CPU", 0)))
            if view.num_gpus > 0:
                index[name] = (view, node)
        return index

    def nodes(self) -> tuple[NodeView, ...]:
        return tuple(view for view, _ in sorted(self._index().values(), key=lambda v: v[0].name))

    # ---- launching -----------------------------------------------------------------------------

    def _clear_job(self, job_id: str) -> None:
        """Remove keepers left by earlier attempts of the job: an attempt whose handle never
        reached the store (the control plane died mid-launch) would train alongside this one."""
        prefix = f"{ACTOR_PREFIX}{job_id}:"
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == self.namespace and a["name"].startswith(prefix)]
        if names:
            log.warning("job %s: stopping leftover replicas %s", job_id, names)
            self._stop_named(names, grace_s=10.0)

    def launch(self, launch: Launch) -> Handle:
        alloc = launch.allocation
        index = self._index()
        unknown = [n for n in alloc.gpus if n not in index]
        if unknown:
            raise ThriftyError(
                f"job {launch.job_id}: node(s) {unknown} are not alive Ray nodes "
                f"(alive: {sorted(index)})"
            )
        self._clear_job(launch.job_id)
        gpu = alloc.kind != "cpu"
        placement = [(node, local) for node, count in alloc.gpus.items() for local in range(count)]
        names = [actor_name(launch.job_id, launch.attempt, r) for r in range(len(placement))]
        actors = []
        for rank, (node, _) in enumerate(placement):
            strategy = NodeAffinitySchedulingStrategy(index[node][1]["NodeID"], soft=False)
            actors.append(_RemoteReplica.options(
                name=names[rank], namespace=self.namespace, lifetime="detached",
                num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,
                scheduling_strategy=strategy,
            ).remote())
        handle: Handle = {
            "executor": self.name,
            "namespace": self.namespace,
            "key": f"{launch.job_id}/{launch.attempt}",
            "actors": names,
            "nodes": [node for node, _ in placement],
            "node_ids": [index[node][1]["NodeID"] for node, _ in placement],
        }
        self._actors.update(zip(names, actors, strict=True))
        try:
            infos = ray.get([a.describe.remote(r == 0) for r, a in enumerate(actors)],
                            timeout=self.launch_timeout_s)
        except RayError as err:
            return self._failed_launch(handle, err, (
                f"job {launch.job_id}: replicas could not be placed on {dict(alloc.gpus)} "
                f"within {self.launch_timeout_s:.0f} s ({type(err).__name__}); the nodes may "
                "be busy with work outside thrifty"))
        env = self._environments(launch, placement, infos)
        argv = launch.spec.entrypoint.argv(PYTHON)
        launch.log_dir.mkdir(parents=True, exist_ok=True)
        # Keepers run elsewhere, in folders of their own: paths go as this machine resolves them.
        workdir = str(Path(launch.spec.working_dir).absolute())
        starts = [a.start.remote(argv, workdir, env[r], str(launch.log_path(r).absolute()))
                  for r, a in enumerate(actors)]
        try:
            pids = ray.get(starts, timeout=self.launch_timeout_s)
        except RayError as err:
            return self._failed_launch(
                handle, err, f"job {launch.job_id}: replicas did not start ({err})")
        handle.update(ips=[info["ip"] for info in infos], pids=pids, report=infos[0]["report"])
        return handle

    def _failed_launch(self, handle: Handle, err: RayError, message: str) -> Handle:
        """Undo a launch. A node that died meanwhile makes it a lost attempt (the handle is
        returned, and poll reports those replicas lost: the job is resumed, not failed);
        anything else is the launch's failure."""
        self._release(handle)
        alive = self._alive_ids(max_age_s=0.0)
        if not isinstance(err, GetTimeoutError) and not alive >= set(handle["node_ids"]):
            log.warning("%s: a node died during the launch", handle["key"])
            return handle
        raise ThriftyError(message) from err

    @staticmethod
    def _environments(launch: Launch, placement: list[tuple[str, int]],
                      infos: list[dict[str, Any]]) -> list[dict[str, str]]:
        """What each rank's environment adds to its node's: torchrun's variables, thrifty's, one
        thread, unbuffered output."""
        alloc = launch.allocation
        world = len(placement)
        devices: dict[str, list[str]] = {}
        for (node, _), info in zip(placement, infos, strict=True):
            devices.setdefault(node, []).extend(info["gpus"])
        base = {**launch.spec.env, **launch.env}
        envs = []
        for rank, ((node, local), info) in enumerate(zip(placement, infos, strict=True)):
            env = {
                **base,
                "RANK": str(rank), "WORLD_SIZE": str(world),
                "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(alloc.gpus[node]),
                # An uneven spread ({a: 2, b: 1}) has no whole WORLD_SIZE / LOCAL_WORLD_SIZE.
                "THRIFTY_NUM_NODES": str(len(alloc.gpus)),
                "MASTER_ADDR": infos[0]["ip"], "MASTER_PORT": str(infos[0]["port"]),
                "THRIFTY_GPU_KIND": alloc.kind, "THRIFTY_REPORT": infos[0]["report"],
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                # LOCAL_RANK indexes the GPUs of this job on this node, as under torchrun.
                "CUDA_VISIBLE_DEVICES": ",".join(devices[node]),
            }
            if info["ifname"]:
                for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
                    env[var] = base.get(var, info["ifname"])
            envs.append(env)
        return envs

    # ---- watching ------------------------------------------------------------------------------

    def _actor(self, name: str) -> Any | None:
        actor = self._actors.get(name)
        if actor is None:
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
            self._actors[name] = actor
        return actor

    def poll(self, handle: Handle) -> AttemptStatus:
        key = handle.get("key", "")
        if key in self._finished:
            return self._finished[key]
        if not handle.get("actors"):
            return AttemptStatus([LOST], "the attempt has no replicas on record")
        names: list[str] = handle["actors"]
        actors = [self._actor(n) for n in names]
        codes: list[int | None] = [LOST if a is None else None for a in actors]
        refs = {r: a.status.remote() for r, a in enumerate(actors) if a is not None}
        report_ref = actors[0].report.remote() if actors[0] is not None else None
        pending = list(refs.values()) + ([report_ref] if report_ref is not None else [])
        ray.wait(pending, num_returns=len(pending), timeout=self.poll_timeout_s)
        for rank, ref in refs.items():
            try:
                codes[rank] = ray.get(ref, timeout=0)
            except (ActorDiedError, ActorUnschedulableError):
                codes[rank] = LOST
            except (GetTimeoutError, RayActorError):
                # No answer yet (busy, or its node is failing): lost only once the node is gone.
                codes[rank] = None if handle["node_ids"][rank] in self._alive_ids() else LOST
        report = None
        if report_ref is not None:
            with contextlib.suppress(GetTimeoutError, RayActorError, ActorUnschedulableError):
                report = ray.get(report_ref, timeout=0)
        status = self._settle(handle, codes, report)
        if not status.running:
            self._release(handle)
            self._remember(key, status)
        return status

    def _remember(self, key: str, status: AttemptStatus) -> None:
        """Keep an ended attempt's status: its keepers are gone, yet the scheduler may ask."""
        self._finished[key] = status
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.pop(next(iter(self._finished)))

    def _settle(self, handle: Handle, codes: list[int | None],
                report: dict[str, Any] | None) -> AttemptStatus:
        """Turn a lost replica into the end of the whole attempt.

        Its peers would wait on it in every collective until their timeout, so they are asked to
        checkpoint and stop now; whatever they then exit with (a collective that failed mid-way
        is an error) is the node loss's doing, and counts as lost too, so that the scheduler
        resumes the job rather than counting a failure against it.
        """
        lost = [r for r, c in enumerate(codes) if c == LOST]
        if not lost:
            return AttemptStatus(codes, "", {"report": report})
        key = handle.get("key", "")
        running = [r for r, c in enumerate(codes) if c is None]
        if running and key not in self._stopping:
            self._stopping.add(key)
            for rank in running:
                actor = self._actor(handle["actors"][rank])
                if actor is not None:
                    actor.terminate.remote(self.lost_grace_s)
        alive = self._alive_ids()
        dead = sorted({handle["nodes"][r] for r in lost if handle["node_ids"][r] not in alive})
        if dead:
            note = f"replica(s) {lost} lost with node(s) {', '.join(dead)}"
        else:
            note = f"replica(s) {lost} lost: their Ray actors are gone, their nodes alive"
        failed = [r for r, c in enumerate(codes) if c not in (None, 0, LOST)]
        if failed:
            note += f"; replica(s) {failed} ended with {[codes[r] for r in failed]} after that"
        codes = [LOST if r in failed else c for r, c in enumerate(codes)]
        return AttemptStatus(codes, note, {"report": report})

    def _release(self, handle: Handle) -> None:
        """The attempt is over: end the keepers (they hold their node's GPU or CPU)."""
        names: list[str] = handle.get("actors", [])
        actors = [a for a in (self._actor(n) for n in names) if a is not None]
        cleanups = [a.cleanup.remote() for a in actors]
        with contextlib.suppress(GetTimeoutError, RayActorError, ActorUnschedulableError):
            ray.wait(cleanups, num_returns=len(cleanups), timeout=10.0)
        self._kill(actors)
        for name in names:
            self._actors.pop(name, None)
        self._stopping.discard(handle.get("key", ""))

    @staticmethod
    def _kill(actors: Sequence[Any]) -> None:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    # ---- stopping ------------------------------------------------------------------------------

    def _stop_named(self, names: Sequence[str], grace_s: float) -> None:
        actors = [a for a in (self._actor(n) for n in names) if a is not None]
        self._terminate(actors, grace_s)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.get(actor.cleanup.remote(), timeout=10.0)
        self._kill(actors)
        for name in names:
            self._actors.pop(name, None)

    def _terminate(self, actors: Sequence[Any], grace_s: float) -> None:
        """SIGTERM all, wait up to `grace_s` for them to exit, then SIGKILL what is left."""
        def ask(grace: float) -> list[int | None]:
            return self._gather([a.terminate.remote(grace) for a in actors])

        codes = ask(grace_s)
        deadline = time.monotonic() + grace_s
        while any(c is None for c in codes) and time.monotonic() < deadline:
            time.sleep(0.2)
            codes = self._statuses(actors)
        if any(c is None for c in codes):
            ask(0.0)
            end = time.monotonic() + 5.0
            while any(c is None for c in self._statuses(actors)) and time.monotonic() < end:
                time.sleep(0.1)

    def _statuses(self, actors: Sequence[Any]) -> list[int | None]:
        return self._gather([a.status.remote() for a in actors])

    def _gather(self, refs: Sequence[Any]) -> list[int | None]:
        """Exit codes from the actors' answers; an actor that cannot answer counts as LOST."""
        out: list[int | None] = []
        for ref in refs:
            try:
                out.append(ray.get(ref, timeout=self.poll_timeout_s))
            except (GetTimeoutError, RayActorError, ActorUnschedulableError):
                out.append(LOST)
        return out

    def stop(self, handles: Sequence[Handle], grace_s: float) -> None:
        """Ask every replica of every attempt to checkpoint and exit; kill what is left."""
        live = [h for h in handles if h.get("actors") and h.get("key") not in self._finished]
        actors = [a for h in live for a in (self._actor(n) for n in h["actors"]) if a is not None]
        if actors:
            self._terminate(actors, grace_s)
        for handle in live:
            status = self.poll(handle)  # records the exit codes, then releases the keepers
            if status.running:  # unreachable keepers of a node that is not yet declared dead
                self._release(handle)
                codes = [LOST if c is None else c for c in status.exit_codes]
                self._remember(handle["key"], AttemptStatus(
                    codes, "replicas did not answer the stop request; their keepers were killed",
                    status.extra))

    def adopt(self, handle: Handle) -> bool:
        if not handle.get("actors") or handle.get("namespace", self.namespace) != self.namespace:
            return False
        return self.poll(handle).running

    def close(self) -> None:
        """Leave running replicas alone (a restarted control plane adopts them); disconnect."""
        self._actors.clear()
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()

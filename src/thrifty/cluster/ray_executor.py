"""The Ray executor: a Ray cluster of any size, one detached actor per replica.

Each replica has a small keeper actor pinned to its node (node affinity, holding 1 GPU there, or 1
CPU on a node without GPUs). The keeper starts the job's command as a child process with the
torch.distributed environment set, as torchrun would set it, and answers for it: exit status,
the job's report (rank 0), stop requests. Keepers are named `thrifty:{job}:{attempt}:{rank}` and
detached, so they outlive the control plane and a restarted one finds them again by name (`adopt`).

How nodes declare their GPU kind: `thrifty.cluster.ray_nodes`. The keeper actor:
`thrifty.cluster.ray_keeper`.

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
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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

from thrifty.cluster import ray_keeper
from thrifty.cluster.executor import LOST, AnyHandle, AttemptStatus, Handle, Launch
from thrifty.cluster.ray_keeper import PYTHON, Keeper
from thrifty.cluster.ray_nodes import node_index
from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.policy.base import NodeView

log = logging.getLogger(__name__)

ACTOR_PREFIX = "thrifty:"
_FINISHED_KEPT = 1000

# Keepers are shipped to the nodes by value (see thrifty.cluster.ray_keeper).
cloudpickle.register_pickle_by_value(ray_keeper)
_RemoteKeeper = ray.remote(max_restarts=0)(Keeper)


@dataclass(frozen=True)
class RayHandle(Handle):
    """An attempt's keepers by actor name, with the nodes (and Ray node ids) they run on."""

    namespace: str = "thrifty"
    actors: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    node_ids: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    report: str | None = None
    executor: ClassVar[str] = "ray"


def actor_name(job_id: str, attempt: int, rank: int) -> str:
    return f"{ACTOR_PREFIX}{job_id}:{attempt}:{rank}"


class RayExecutor:
    """Runs replicas as actors on a running Ray cluster (`address` as ray.init takes it)."""

    name = "ray"
    shares_filesystem = False
    isolation = "environment"  # replicas get a scrubbed environment, never a sandbox

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
        return node_index(self._alive())

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

    def launch(self, launch: Launch) -> RayHandle:
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
            actors.append(_RemoteKeeper.options(
                name=names[rank], namespace=self.namespace, lifetime="detached",
                num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,
                scheduling_strategy=strategy,
            ).remote())
        handle = RayHandle(
            key=f"{launch.job_id}/{launch.attempt}", namespace=self.namespace,
            actors=tuple(names), nodes=tuple(node for node, _ in placement),
            node_ids=tuple(index[node][1]["NodeID"] for node, _ in placement),
        )
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
        return dataclasses.replace(handle, ips=tuple(info["ip"] for info in infos),
                                   pids=tuple(pids), report=infos[0]["report"])

    def _failed_launch(self, handle: RayHandle, err: RayError, message: str) -> RayHandle:
        """Undo a launch. A node that died meanwhile makes it a lost attempt (the handle is
        returned, and poll reports those replicas lost: the job is resumed, not failed);
        anything else is the launch's failure."""
        self._release(handle)
        alive = self._alive_ids(max_age_s=0.0)
        if not isinstance(err, GetTimeoutError) and not alive >= set(handle.node_ids):
            log.warning("%s: a node died during the launch", handle.key)
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
                "MASTER_ADDR": infos[0]["ip"], "MASTER_PORT": str(infos[0]["port"]),
                # The whole allocation (kind, nodes: an uneven spread such as {a: 2, b: 1} has
                # no whole WORLD_SIZE / LOCAL_WORLD_SIZE) travels as one value.
                Env.ALLOCATION: alloc.to_json(), Env.REPORT: infos[0]["report"],
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

    def poll(self, handle: AnyHandle) -> AttemptStatus:
        handle = RayHandle.read(handle)
        if handle is None or not handle.actors:
            return AttemptStatus.missing()
        key = handle.key
        if key in self._finished:
            return self._finished[key]
        actors = [self._actor(n) for n in handle.actors]
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
                codes[rank] = None if handle.node_ids[rank] in self._alive_ids() else LOST
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

    def _settle(self, handle: RayHandle, codes: list[int | None],
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
        key = handle.key
        running = [r for r, c in enumerate(codes) if c is None]
        if running and key not in self._stopping:
            self._stopping.add(key)
            for rank in running:
                actor = self._actor(handle.actors[rank])
                if actor is not None:
                    actor.terminate.remote(self.lost_grace_s)
        alive = self._alive_ids()
        dead = sorted({handle.nodes[r] for r in lost if handle.node_ids[r] not in alive})
        if dead:
            note = f"replica(s) {lost} lost with node(s) {', '.join(dead)}"
        else:
            note = f"replica(s) {lost} lost: their Ray actors are gone, their nodes alive"
        failed = [r for r, c in enumerate(codes) if c not in (None, 0, LOST)]
        if failed:
            note += f"; replica(s) {failed} ended with {[codes[r] for r in failed]} after that"
        codes = [LOST if r in failed else c for r, c in enumerate(codes)]
        return AttemptStatus(codes, note, {"report": report})

    def _release(self, handle: RayHandle) -> None:
        """The attempt is over: end the keepers (they hold their node's GPU or CPU)."""
        names = handle.actors
        actors = [a for a in (self._actor(n) for n in names) if a is not None]
        cleanups = [a.cleanup.remote() for a in actors]
        with contextlib.suppress(GetTimeoutError, RayActorError, ActorUnschedulableError):
            ray.wait(cleanups, num_returns=len(cleanups), timeout=10.0)
        self._kill(actors)
        for name in names:
            self._actors.pop(name, None)
        self._stopping.discard(handle.key)

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

    def stop(self, handles: Sequence[AnyHandle], grace_s: float) -> None:
        """Ask every replica of every attempt to checkpoint and exit; kill what is left."""
        read = [RayHandle.read(h) for h in handles]
        live = [h for h in read if h is not None and h.actors and h.key not in self._finished]
        actors = [a for h in live for a in (self._actor(n) for n in h.actors) if a is not None]
        if actors:
            self._terminate(actors, grace_s)
        for handle in live:
            status = self.poll(handle)  # records the exit codes, then releases the keepers
            if status.running:  # unreachable keepers of a node that is not yet declared dead
                self._release(handle)
                codes = [LOST if c is None else c for c in status.exit_codes]
                self._remember(handle.key, AttemptStatus(
                    codes, "replicas did not answer the stop request; their keepers were killed",
                    status.extra))

    def adopt(self, handle: AnyHandle) -> bool:
        handle = RayHandle.read(handle)
        if handle is None or not handle.actors or handle.namespace != self.namespace:
            return False
        return self.poll(handle).running

    def close(self) -> None:
        """Leave running replicas alone (a restarted control plane adopts them); disconnect."""
        self._actors.clear()
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()

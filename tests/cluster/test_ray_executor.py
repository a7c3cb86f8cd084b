"""The Ray executor on a real loopback Ray cluster: nodes, a job across nodes, a lost node, adopt.

The cluster (conftest.py) has a head on 127.0.0.2 and a node on 127.0.0.3, one CPU slot each;
tests that need more start nodes of their own and kill them by process id. All tests of this
module share one xdist group: run with `--dist loadgroup` to keep them on one worker (the
fixtures also serialise them across workers).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from ray_cluster import start_node
from sqlalchemy import select
from waiting import wait_until

from thrifty.cluster.executor import LOST, Launch
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import Attempt, Event
from thrifty.cluster.spec import validate_spec
from thrifty.cluster.states import RUNNING, SUCCEEDED
from thrifty.cluster.store import Store
from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation
from thrifty.train.signals import EXIT_RESIZE

pytestmark = pytest.mark.xdist_group("ray")

TRAIN = Path(__file__).with_name("ray_train.py")
HEAD, WORKER = "127.0.0.2", "127.0.0.3"


def train_spec(name: str, workdir: Path, epochs: int, replicas: int = 2,
               step_sleep: float = 0.0) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "rigid",
        "entrypoint": {"script": str(TRAIN),
                       "args": ["--epochs", str(epochs), "--step-sleep", str(step_sleep)]},
        "working_dir": str(workdir),
        "resources": {"min_replicas": replicas, "max_replicas": replicas},
    }


def make_plane(tmp_path: Path, executor: Any) -> ControlPlane:
    return ControlPlane(store=Store(f"sqlite:///{tmp_path}/db"), executor=executor,
                        policy="fifo", interval_s=1, home=tmp_path, stop_grace_s=15,
                        retry_backoff_s=1)


def attempts(plane: ControlPlane, job_id: str) -> list[Attempt]:
    with plane.store.session() as s:
        return list(s.scalars(select(Attempt).where(Attempt.job_id == job_id)
                              .order_by(Attempt.number)))


def log_text(plane: ControlPlane, job_id: str, attempt: int, rank: int) -> str:
    path = plane.scheduler.log_dir(job_id) / f"attempt-{attempt}-rank-{rank}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def keepers(namespace: str) -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace]


def forget_node(address: str, ip: str) -> None:
    """Wait until Ray has declared a killed node dead, so the next test does not see it."""
    import ray

    connected = ray.is_initialized()
    if not connected:
        ray.init(address=address, log_to_driver=False)
    try:
        wait_until(lambda: not any(n["Alive"] and n["NodeManagerAddress"] == ip
                                   for n in ray.nodes()), f"Ray to declare {ip} dead",
                   timeout_s=60, every_s=0.5)
    finally:
        if not connected:
            ray.shutdown()


def gone(namespace: str) -> None:
    """The executor ended every keeper of the namespace (Ray removes a killed actor's name
    within moments, not at once)."""
    wait_until(lambda: keepers(namespace) == [], f"the keepers of {namespace} to end",
               timeout_s=10, every_s=0.2)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    return tmp_path


def test_keeper_module_imports_nothing_of_thrifty() -> None:
    """Keepers travel to the nodes by value: a thrifty import there would load thrifty (and
    PyTorch) on every node, or fail where thrifty is not installed."""
    import thrifty.cluster.ray_keeper as keeper

    tree = ast.parse(Path(keeper.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0]
    relative = [node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert imported and not relative
    assert [name for name in imported if name.split(".")[0] == "thrifty"] == []


def test_node_kind_comes_from_label_then_resource_then_ray() -> None:
    from thrifty.cluster.ray_keeper import interface_of
    from thrifty.cluster.ray_nodes import node_kind as _node_kind

    assert _node_kind({"Labels": {"thrifty.gpu-kind": "A100"},
                       "Resources": {"gpu-kind:T4": 1}}) == "A100"
    assert _node_kind({"Labels": {}, "Resources": {"GPU": 4, "gpu-kind:T4": 1}}) == "T4"
    assert _node_kind({"Resources": {"GPU": 1, "accelerator_type:L4": 1}}) == "L4"
    assert _node_kind({"Labels": {"ray.io/accelerator-type": "H100"}}) == "H100"
    assert _node_kind({"Labels": {"ray.io/node-id": "x"}, "Resources": {"CPU": 8}}) is None
    assert interface_of("127.0.0.3") == "lo"
    assert interface_of("203.0.113.77") is None  # an address no interface here holds


def test_nodes_are_the_alive_ray_nodes_with_their_slots(ray_executors, home: Path) -> None:
    executor = ray_executors()
    nodes = {(n.name, n.gpu_kind, n.num_gpus) for n in executor.nodes()}
    assert nodes == {(HEAD, "cpu", 1), (WORKER, "cpu", 1)}

    spec = validate_spec(train_spec("nowhere", home, epochs=1, replicas=1))
    launch = Launch("nowhere", 1, spec, Allocation({"127.0.0.99": 1}, "cpu"), {}, home / "logs")
    with pytest.raises(ThriftyError, match=r"127\.0\.0\.99.*not alive Ray nodes"):
        executor.launch(launch)


def test_gpu_node_kind_from_label_and_replica_environment(
    ray_executors, ray_address: str, ray_namespace: str, home: Path
) -> None:
    """A node started with 2 (declared) GPUs and a kind label: each replica holds one GPU, and
    sees both of the job's GPUs on its node so that LOCAL_RANK picks its own."""
    node, _ = start_node("127.0.0.5", address=ray_address, num_cpus=1, num_gpus=2,
                         labels={"thrifty.gpu-kind": "T4"})
    try:
        executor = ray_executors()
        views = {n.name: n for n in executor.nodes()}
        assert views["127.0.0.5"].gpu_kind == "T4" and views["127.0.0.5"].num_gpus == 2
        assert views[HEAD].gpu_kind == "cpu"

        names = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "THRIFTY_ALLOCATION", "CUDA_VISIBLE_DEVICES", "GLOO_SOCKET_IFNAME",
                 "OMP_NUM_THREADS", "THRIFTY_REPORT", "THRIFTY_JOB_ID", "MY_SETTING"]
        code = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
        spec = validate_spec({"name": "envcheck", "mode": "rigid", "working_dir": str(home),
                              "env": {"MY_SETTING": "kept"},
                              "entrypoint": {"command": [sys.executable, "-c", code]},
                              "resources": {"min_replicas": 2, "max_replicas": 2}})
        launch = Launch("envcheck", 1, spec, Allocation({"127.0.0.5": 2}, "T4"),
                        {"THRIFTY_JOB_ID": "envcheck"}, home / "logs")
        from thrifty.cluster.ray_executor import RayHandle

        handle = executor.launch(launch)
        stored = json.loads(json.dumps(handle.to_dict()))  # as the store keeps it
        assert stored == handle.to_dict() and RayHandle.from_dict(stored) == handle
        status = wait_until(lambda: (s := executor.poll(handle)) and not s.running and s,
                            "the replicas to print their environment", timeout_s=60)
        assert list(status.exit_codes) == [0, 0]
        seen = [json.loads(launch.log_path(r).read_text().strip().splitlines()[-1])
                for r in range(2)]
        for rank, env in enumerate(seen):
            assert env["RANK"] == str(rank) and env["LOCAL_RANK"] == str(rank)
            assert env["WORLD_SIZE"] == "2" and env["LOCAL_WORLD_SIZE"] == "2"
            assert env["MASTER_ADDR"] == "127.0.0.5" and int(env["MASTER_PORT"]) > 0
            assert Allocation.from_json(env["THRIFTY_ALLOCATION"]) == launch.allocation
            assert env["GLOO_SOCKET_IFNAME"] == "lo"
            assert sorted(env["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "1"]
            assert env["OMP_NUM_THREADS"] == "1" and env["MY_SETTING"] == "kept"
            assert env["THRIFTY_JOB_ID"] == "envcheck"
        assert seen[0]["CUDA_VISIBLE_DEVICES"] == seen[1]["CUDA_VISIBLE_DEVICES"]
        assert seen[0]["THRIFTY_REPORT"] == seen[1]["THRIFTY_REPORT"]
        gone(ray_namespace)  # an ended attempt releases its GPUs
    finally:
        node.kill()
        node.remove_files()
        forget_node(ray_address, "127.0.0.5")


def test_rigid_job_spans_both_nodes_and_succeeds(ray_executors, ray_namespace: str,
                                                  home: Path) -> None:
    plane = make_plane(home, ray_executors())
    plane.start()
    try:
        job = plane.submit(validate_spec(train_spec("across", home, epochs=2)))
        wait_until(lambda: plane.store.get(job.id).state == SUCCEEDED,
                   f"job {job.id} to succeed", timeout_s=120)
        (attempt,) = attempts(plane, job.id)
        assert attempt.allocation["gpus"] == {HEAD: 1, WORKER: 1}
        assert attempt.handle["ips"] == [HEAD, WORKER]  # each keeper on its own node
        assert attempt.exit_codes == [0, 0] and attempt.outcome == "succeeded"
        for rank in (0, 1):
            text = log_text(plane, job.id, 1, rank)
            assert f"rank {rank} of 2 starts at epoch 0" in text
            assert f"rank {rank} epoch 1 loss" in text and f"rank {rank} done at epoch 2" in text
        row = plane.store.get(job.id)
        assert row.report is not None and row.report["epoch"] == 2  # rank 0's last report
        gone(ray_namespace)
    finally:
        plane.stop(stop_jobs=True)


def test_poll_reports_a_lost_node_and_stops_the_replicas_left(
    ray_executors, ray_address: str, ray_namespace: str, home: Path
) -> None:
    """Seen by poll: the replica on the dead node is lost, and its peer, which would otherwise
    wait for it, is stopped; its exit then counts as lost too (not as the job's failure)."""
    node, _ = start_node("127.0.0.6", address=ray_address, num_cpus=1)
    try:
        executor = ray_executors(lost_grace_s=5)
        spec = validate_spec({"name": "sleepers", "mode": "rigid", "working_dir": str(home),
                              "entrypoint": {"command": ["sleep", "600"]},
                              "resources": {"min_replicas": 2, "max_replicas": 2}})
        launch = Launch("sleepers", 1, spec, Allocation({WORKER: 1, "127.0.0.6": 1}, "cpu"), {},
                        home / "logs")
        handle = executor.launch(launch)
        assert list(executor.poll(handle).exit_codes) == [None, None]
        survivor = handle.pids[0]
        node.kill()
        status = wait_until(lambda: (s := executor.poll(handle)) and not s.running and s,
                            "poll to see the node lost", timeout_s=30)
        assert list(status.exit_codes) == [LOST, LOST]
        assert status.outcome() == "resize"
        assert "lost with node(s) 127.0.0.6" in status.note
        assert "replica(s) [0] ended with [143]" in status.note  # stopped by SIGTERM
        assert not Path(f"/proc/{survivor}").exists()
        gone(ray_namespace)
    finally:
        node.kill()
        node.remove_files()
        forget_node(ray_address, "127.0.0.6")


def test_lost_node_requeues_the_job_which_resumes_from_its_checkpoint(
    ray_executors, ray_address: str, ray_namespace: str, home: Path
) -> None:
    """A third node dies with a replica on it: the other replica is stopped, the attempt counts
    as lost (not failed), and the job resumes on the nodes left, from its last checkpoint."""
    lost, _ = start_node("127.0.0.4", address=ray_address, num_cpus=1)
    plane = make_plane(home, ray_executors(lost_grace_s=10))
    try:
        plane.start()
        # Hold the head's slot so that the job has to use the new node and the worker.
        blocker = plane.submit(validate_spec({
            "name": "blocker", "mode": "rigid", "working_dir": str(home),
            "entrypoint": {"command": ["sleep", "600"]}}))
        wait_until(lambda: plane.store.get(blocker.id).state == RUNNING, "the blocker",
                   timeout_s=60)
        assert plane.store.get(blocker.id).allocation["gpus"] == {HEAD: 1}

        job = plane.submit(validate_spec(train_spec("survivor", home, epochs=5,
                                                    step_sleep=0.05)))
        wait_until(lambda: "rank 0 epoch 1 loss" in log_text(plane, job.id, 1, 0),
                   "two epochs of the first attempt", timeout_s=90)
        assert attempts(plane, job.id)[0].allocation["gpus"] == {WORKER: 1, "127.0.0.4": 1}
        lost.kill()  # the node vanishes, with its raylet, workers and the replica on it

        def requeued() -> list[Event]:
            return [e for e in plane.store.events(job.id) if e.kind == "requeued"]

        wait_until(requeued, "the job to be requeued", timeout_s=60)
        # Seen by a poll (the attempt ended: lost), or first by the scheduler noticing that the
        # node left the cluster (it stops the attempt: preempted): either way, replica 1 is lost.
        first = attempts(plane, job.id)[0]
        assert first.outcome in ("resize", "stopped") and first.exit_codes[1] == LOST
        plane.cancel(blocker.id)
        wait_until(lambda: plane.store.get(job.id).state == SUCCEEDED,
                   "the job to finish on the nodes left", timeout_s=150)

        first, second = attempts(plane, job.id)
        assert second.allocation["gpus"] == {HEAD: 1, WORKER: 1}
        assert second.exit_codes == [0, 0]
        assert plane.store.get(job.id).failures == 0  # a lost node is not the job's failure
        resumed = re.search(r"rank 0 of 2 starts at epoch (\d+) step (\d+)",
                            log_text(plane, job.id, 2, 0))
        assert resumed is not None and int(resumed.group(1)) >= 1 and int(resumed.group(2)) > 0
        assert "rank 0 epoch 0 loss" not in log_text(plane, job.id, 2, 0)
        assert "rank 0 done at epoch 5" in log_text(plane, job.id, 2, 0)
        gone(ray_namespace)
    finally:
        plane.stop(stop_jobs=True)
        lost.kill()
        lost.remove_files()
        forget_node(ray_address, "127.0.0.4")


def test_a_fresh_driver_adopts_running_replicas_and_stops_them(
    ray_executors, ray_namespace: str, home: Path
) -> None:
    job_id = f"adopt-{uuid.uuid4().hex[:6]}"
    spec = validate_spec(train_spec("adopt", home, epochs=50, step_sleep=0.05))
    checkpoints = home / "checkpoints"
    launch = Launch(job_id, 1, spec, Allocation({HEAD: 1, WORKER: 1}, "cpu"),
                    {"THRIFTY_JOB_ID": job_id, "THRIFTY_CHECKPOINT_DIR": str(checkpoints)},
                    home / "logs")
    first = ray_executors()
    handle = json.loads(json.dumps(first.launch(launch).to_dict()))  # as the store keeps it
    wait_until(lambda: "rank 0 epoch 0 loss" in launch.log_path(0).read_text(),
               "the first epoch", timeout_s=90)
    first.close()  # the control plane goes away; its detached keepers stay

    second = ray_executors()
    assert second.adopt(handle)
    assert second.poll(handle).running
    assert sorted(keepers(ray_namespace)) == sorted(handle["actors"])

    second.stop([handle], grace_s=30)
    status = second.poll(handle)
    assert list(status.exit_codes) == [EXIT_RESIZE, EXIT_RESIZE]  # checkpointed on request
    assert status.outcome() == "resize"
    assert status.extra["report"]["job_id"] == job_id
    assert sorted(p.name for p in checkpoints.glob("ckpt-*.pt"))
    gone(ray_namespace)
    second.close()
    third = ray_executors()
    assert not third.adopt(handle)  # nothing left to adopt: every replica counts as lost
    assert list(third.poll(handle).exit_codes) == [LOST, LOST]

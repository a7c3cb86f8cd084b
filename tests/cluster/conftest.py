"""Ray fixtures for the cluster tests: one loopback Ray cluster, used by one test at a time.

The cluster comes from THRIFTY_TEST_RAY_ADDRESS when set (CI starts it, see .ci/ray-cluster);
otherwise the first test that needs it starts one (a head on 127.0.0.2 and a node on 127.0.0.3,
1 CPU each) and the last pytest process using it stops it, by process ids. Under pytest-xdist the
worker processes share that one cluster, and a lock lets one test at a time use it: the tests
count its two CPU slots as theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ray_cluster import RAY_ENV, RayCluster, start_cluster

ADDRESS_VAR = "THRIFTY_TEST_RAY_ADDRESS"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run sees (the run's root); this process's otherwise."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def ray_session_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The cluster's address, with Ray's environment (no auth, no usage stats) set."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in RAY_ENV.items():
            patch.setenv(name, value)
        given = os.environ.get(ADDRESS_VAR)
        if given:
            yield given
            return
        root = _shared_root(tmp_path_factory)
        state, lock = root / "ray-cluster.json", root / "ray-cluster.lock"
        me = str(os.getpid())
        with _locked(lock):
            cluster, users = None, []
            if state.is_file():
                found = RayCluster.load(state)
                if found.alive():
                    cluster, users = found, json.loads(state.read_text()).get("users", [])
            if cluster is None:
                cluster = start_cluster()
                cluster.save(state)
            _save_users(state, [*users, me])
        try:
            yield cluster.address
        finally:
            with _locked(lock):
                data = json.loads(state.read_text()) if state.is_file() else {}
                users = [u for u in data.get("users", []) if u != me]
                if users:
                    _save_users(state, users)
                else:
                    cluster.stop()
                    state.unlink(missing_ok=True)


def _save_users(state: Path, users: list[str]) -> None:
    data = json.loads(state.read_text())
    data["users"] = users
    tmp = state.with_name(f".{state.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, state)


@pytest.fixture
def ray_address(ray_session_address: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The cluster, held by this test alone (the other xdist workers wait for it)."""
    with _locked(_shared_root(tmp_path_factory) / "ray-tests.lock"):
        yield ray_session_address


@pytest.fixture
def ray_namespace() -> str:
    """A Ray namespace of this test's own, so its actors never meet another test's."""
    return f"thrifty-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ray_executors(ray_address: str, ray_namespace: str) -> Iterator[Callable[..., object]]:
    """Makes RayExecutors on the cluster (a new one after close() is a fresh driver); at the
    end, whatever the test left in its namespace is stopped and the driver disconnected."""
    import ray

    from thrifty.cluster.ray_executor import RayExecutor

    made: list[RayExecutor] = []

    def make(**kwargs: object) -> RayExecutor:
        executor = RayExecutor(ray_address, namespace=ray_namespace, **kwargs)  # type: ignore[arg-type]
        made.append(executor)
        return executor

    yield make
    if not ray.is_initialized():
        ray.init(address=ray_address, namespace=ray_namespace, log_to_driver=False)
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != ray_namespace:
            continue
        with contextlib.suppress(Exception):
            actor = ray.get_actor(entry["name"], namespace=ray_namespace)
            with contextlib.suppress(Exception):
                ray.get(actor.cleanup.remote(), timeout=10)
            ray.kill(actor)
    ray.shutdown()

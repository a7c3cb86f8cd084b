"""Serving the API: on a thread of this process (`ApiServer`, for tests and the demo), or as
`thrifty server` runs it (`open_server`, then `ServedPlane.run`): one server per home, the first
admin's token, the chosen executor, and a scheduling loop stopped however the process ends."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import uvicorn
from fastapi import FastAPI

from thrifty.cluster.executor import Executor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.store import Store
from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.settings import Settings

log = logging.getLogger(__name__)


class ApiServer:
    """The API served by uvicorn on a thread of this process, on a port it binds first (0: any
    free one), so the URL is known and taken before anything connects."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.socket = bind(host, port)
        self.host, self.port = host, int(self.socket.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False,
                                                    timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        self._thread = threading.Thread(target=self.server.run, args=([self.socket],),
                                        name="thrifty-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ThriftyError(f"the API server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or an error that says which address is taken and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on every accepted connection, so a
    # response written in two parts does not wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ThriftyError(f"cannot listen on {host}:{port}: {err.strerror}; pick another "
                           "address with --host/--port") from err
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def lock_home(home: Path) -> IO[str]:
    """One server per home: two scheduling loops on one store would launch jobs twice. The
    kernel drops the lock with the process, however it ends."""
    import fcntl

    handle = (home / "server.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ThriftyError(f"a thrifty server ({owner}) already runs on {home}; stop it first "
                           f"or set {Env.HOME} to another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def secure_home(home: Path) -> None:
    """The server's state folder and its secrets readable by the server's OS user alone: made
    so, and an older home that is looser tightened (and said so in the log)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = [(home, 0o700)] + [(home / name, 0o600) for name in
                                ("token", "thrifty.db", "thrifty.db-wal", "thrifty.db-shm")]
    for path, mode in wanted:
        try:
            now = path.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if now & 0o077:
            path.chmod(mode)
            log.warning("%s was readable by other OS users (mode %o); now %o", path, now, mode)


def write_token(path: Path, token: str) -> None:
    """Readable by its owner only, from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def make_executor(kind: str, settings: Settings, slots: int | None = None,
                  ray_address: str | None = None, isolation: str | None = None) -> Executor:
    """The executor `--executor` names: `local` (this machine, its jobs isolated as
    `isolation` says, default `sandbox`) or `ray` (a Ray cluster at `ray_address`, else Ray's
    own RAY_ADDRESS; its replicas get a scrubbed environment, never a sandbox)."""
    if kind == "local":
        isolation = isolation or "sandbox"
        from thrifty.cluster.local import LocalExecutor

        if slots is not None and slots < 1:
            raise ThriftyError(f"--slots must be at least 1, got {slots}")
        return LocalExecutor(slots=slots, gpu_kind=settings.gpu_kind, isolation=isolation,
                             state_dirs=[settings.home])
    if kind == "ray":
        if isolation == "sandbox":
            raise ThriftyError("--isolation sandbox: the ray executor cannot sandbox its "
                               "replicas (it isolates them by environment only); use "
                               "--executor local, or leave --isolation out")
        try:
            from thrifty.cluster.ray_executor import RayExecutor
        except ImportError as err:
            raise ThriftyError(f"the ray executor cannot load ({err}); install it with "
                               "`pip install 'thrifty[ray]'`") from err
        return RayExecutor(address=ray_address or os.environ.get("RAY_ADDRESS", ""))
    raise ThriftyError(f"--executor must be local or ray, got {kind!r}")


@dataclass
class ServedPlane:
    """A control plane with its store, executor and listening socket, ready to serve."""

    plane: ControlPlane
    store: Store
    executor: Executor
    sock: socket.socket
    admin_token_file: Path | None  # set when this start created the first admin

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def run(self, log_level: str = "info", before: Callable[[], None] = lambda: None) -> None:
        """Start the loop, serve until SIGTERM/SIGINT, then stop the loop (jobs go on)."""
        from thrifty.cluster.api import create_app

        server = uvicorn.Server(uvicorn.Config(create_app(self.plane), log_level=log_level,
                                               access_log=False, timeout_graceful_shutdown=5))

        def _shutdown(*_: object) -> None:
            server.should_exit = True

        # uvicorn turns SIGTERM/SIGINT into a graceful shutdown while it serves, then re-raises
        # the signal it caught: this handler takes that (and a signal before serving began), so
        # that the loop is always stopped below rather than the process dying half-way.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _shutdown)
        self.plane.start()
        before()
        try:
            server.run(sockets=[self.sock])
        finally:
            self.plane.stop()


@contextlib.contextmanager
def open_server(settings: Settings, host: str, port: int, executor: str, policy: str,
                interval_s: float, slots: int | None = None, ray_address: str | None = None,
                db: str | None = None, prices: Path | None = None, carbon: str | None = None,
                budgets: Path | None = None,
                isolation: str | None = None) -> Iterator[ServedPlane]:
    """Everything `thrifty server` holds, opened in order and closed in reverse (on errors
    too). A bad option raises ThriftyError before anything is served."""
    from thrifty.accounting.budgets import load_budgets
    from thrifty.cluster.usage import live_tariff
    from thrifty.policy.registry import make_policy

    with contextlib.ExitStack() as cleanup:
        if interval_s <= 0:
            raise ThriftyError(f"--interval must be positive, got {interval_s}")
        home = settings.home
        secure_home(home)
        cleanup.callback(lock_home(home).close)
        store = Store(db or settings.database_url())
        cleanup.callback(store.close)
        chosen = make_policy(policy)
        tariff = live_tariff(prices, carbon, settings.data_root)
        book = None if budgets is None else load_budgets(budgets)
        sock = bind(host, port)
        cleanup.callback(sock.close)
        runner = make_executor(executor, settings, slots, ray_address, isolation)
        created = None
        if store.count_users() == 0:
            created = settings.token_file
            write_token(created, store.add_user("admin", admin=True))
        plane = ControlPlane(store, runner, chosen, interval_s=interval_s, home=home,
                             tariff=tariff, budgets=book)
        yield ServedPlane(plane, store, runner, sock, created)


def describe(served: ServedPlane, policy: str, interval_s: float) -> str:
    capacity = ", ".join(f"{n.name}: {n.num_gpus} × {n.gpu_kind}"
                         for n in served.executor.nodes())
    return (f"thrifty server on [bold]{served.url}[/] (API docs at {served.url}/docs): "
            f"{served.executor.name} executor ({capacity}), policy {policy}, a round every "
            f"{interval_s:g} s; store {served.store.url}; jobs isolated: "
            f"{isolation_note(served.executor)}")


def isolation_note(executor: Executor) -> str:
    """What keeps one job from reading the server's state and other jobs, in a few words."""
    isolation = getattr(executor, "isolation", None)
    if isolation == "sandbox":
        return "sandbox (bubblewrap: own folder only, scrubbed environment)"
    if isolation == "none":
        return ("none (--isolation none: a scrubbed environment and own HOME only; jobs can "
                "read what the server's OS user can)")
    return ("by environment only (a scrubbed environment and own HOME; replicas run as the "
            "Ray node's OS user and can read what it can)")


def unpriced_nodes(served: ServedPlane) -> list[str]:
    from thrifty.cluster.usage import unpriced

    return unpriced(served.plane.tariff, served.executor.nodes())


__all__ = [
    "ApiServer",
    "ServedPlane",
    "bind",
    "describe",
    "isolation_note",
    "lock_home",
    "make_executor",
    "open_server",
    "secure_home",
    "unpriced_nodes",
    "write_token",
]

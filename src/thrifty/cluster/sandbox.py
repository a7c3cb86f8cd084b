"""What a job's replicas may see: a scrubbed environment always, and a bubblewrap sandbox on the
local executor unless isolation `none` is chosen explicitly.

Replicas run as the server's OS user, so without this a job reads whatever the server can: its
token, its database, every other job's logs and checkpoints. The sandbox (`bwrap`, Debian's
package `bubblewrap`) shows a replica the system read-only (/usr and the /lib, /bin links, /etc
without what only its owner may read, /sys), the Python installation and its `working_dir`
read-only, a fresh /tmp, /proc and /dev, and only its own job folder writable (checkpoints, the
report file, a scratch HOME). The server's state folder is not there, except that job folder.
The network is shared: jobs report to the server and meet their peers on 127.0.0.1.

The process chain of a sandboxed replica, each link for a reason:

    replica wrapper (exit file) -> this module, `ignore-stop` -> bwrap -> this module,
    `default-stop` -> the job

A stop signal reaches the whole process group. bwrap's own process would die of SIGTERM at once
(and report 143 while the job still checkpoints), so it is started with SIGTERM and SIGINT
ignored; inside the sandbox they are reset to their defaults just before the job starts, so the
job gets the signal as it would outside.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from thrifty.cluster.ray_keeper import job_environment
from thrifty.errors import ThriftyError

__all__ = ["ISOLATIONS", "Sandbox", "check_isolation", "job_environment", "job_home"]

ISOLATIONS = ("sandbox", "none")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`) or start the "
                "server with `--isolation none` to run jobs without a sandbox (they can then "
                "read everything the server's OS user can)")

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
_DEVICES = ("/dev/dri",)  # with every /dev/nvidia*: GPU jobs need their device files


def job_home(job_dir: Path) -> Path:
    """The scratch HOME of a job's replicas, in its own folder (kept across its attempts)."""
    home = job_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _others_cannot_read(path: Path) -> bool:
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return not path.is_symlink() and not mode & 0o004


def _owner_only(root: Path) -> tuple[list[Path], list[Path]]:
    """Files and folders under `root` that others may not read (/etc/shadow, private keys): the
    sandbox hides them, so a job sees of /etc what any user of the machine could."""
    files, folders = [], []
    for base, dirs, names in os.walk(root):
        for name in list(dirs):
            if _others_cannot_read(Path(base, name)):
                folders.append(Path(base, name))
                dirs.remove(name)  # hidden whole: nothing below it needs listing
        files.extend(Path(base, n) for n in names if _others_cannot_read(Path(base, n)))
    return files, folders


def python_paths(env: Mapping[str, str]) -> list[Path]:
    """The folders the job's Python needs: the interpreter's installation, thrifty's own
    package root and whatever is on the path (PYTHONPATH included)."""
    import thrifty

    found = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(sys.executable).resolve().parent, Path(thrifty.__file__).resolve().parents[1]]
    found += [Path(p) for p in sys.path if p and os.path.isabs(p)]
    found += [Path(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    out: list[Path] = []
    for path in found:
        if path.exists() and path not in out:
            out.append(path)
    return out


@dataclass(frozen=True)
class Sandbox:
    """A bubblewrap that works here (`flags`: the namespace options this kernel allows), and
    what every sandbox hides of /etc."""

    bwrap: str
    flags: tuple[str, ...]
    hidden_files: tuple[Path, ...] = ()
    hidden_folders: tuple[Path, ...] = ()

    @classmethod
    def find(cls) -> Sandbox:
        """The sandbox of this machine, or a ThriftyError saying how to get one."""
        import shutil
        import subprocess

        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise ThriftyError("jobs run in a bubblewrap sandbox (--isolation sandbox, the "
                               f"default), but bwrap is not on PATH: {INSTALL_HINT}")
        tried = []
        # Root (or a setuid bwrap) makes the namespaces itself; anyone else needs a user
        # namespace for them.
        for flags in (("--unshare-pid",), ("--unshare-user", "--unshare-pid")):
            probe = [bwrap, *_mounts(system_ops()), *flags, "--die-with-parent", "true"]
            try:
                done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as err:
                tried.append(str(err))
                continue
            if done.returncode == 0:
                files, folders = _owner_only(Path("/etc"))
                return cls(bwrap, (*flags, "--unshare-ipc", "--unshare-cgroup-try",
                                   "--die-with-parent"), tuple(files), tuple(folders))
            tried.append(done.stderr.strip() or f"exit status {done.returncode}")
        raise ThriftyError(f"jobs run in a bubblewrap sandbox (--isolation sandbox, the "
                           f"default), but {bwrap} cannot make one here ({'; '.join(tried)}): "
                           f"{INSTALL_HINT.split(' or ', 1)[1]}")

    def wrap(self, argv: Sequence[str], *, workdir: Path, job_dir: Path,
             writable: Iterable[Path], hidden: Iterable[Path], env: Mapping[str, str]) -> list[str]:
        """`argv` as run in this job's sandbox. `hidden`: the server's state folders, of which
        only `job_dir` is shown; `writable`: folders the job writes besides its job folder (a
        checkpoint folder its spec names)."""
        hidden = [Path(h).resolve() for h in hidden]
        workdir, job_dir = workdir.resolve(), job_dir.resolve()
        writable = [Path(w).resolve() for w in writable]
        if any(_inside(workdir, h) for h in hidden) and not _inside(workdir, job_dir):
            raise ThriftyError(f"working_dir {workdir} lies in the server's state folder, which "
                               "jobs cannot see; choose a folder of your own")
        shown = [p for p in python_paths(env) if not any(_inside(p, h) for h in hidden)]
        # A checkpoint folder of the spec's choosing is mounted writable: never over the system,
        # the Python installation or the server's state (it could then rewrite or read them).
        guarded = [*hidden, *shown, *(Path(n) for n in _SYSTEM)]
        writable = [w for w in writable if not _inside(w, job_dir)]
        for path in writable:
            clash = next((g for g in guarded if _inside(path, g) or _inside(g, path)), None)
            if clash is not None:
                raise ThriftyError(f"checkpoint_dir {path} overlaps {clash}, which a job may not "
                                   "write; choose a folder of your own")
        ops = system_ops()
        ops += [(str(f), ("--ro-bind", "/dev/null", str(f))) for f in self.hidden_files]
        ops += [(str(d), ("--tmpfs", str(d))) for d in self.hidden_folders]
        ops += [(str(p), ("--ro-bind", str(p), str(p))) for p in shown]
        ops.append((str(workdir), ("--ro-bind", str(workdir), str(workdir))))
        sources = [Path(p) for p, _ in ops]
        ops += [(str(h), ("--tmpfs", str(h))) for h in hidden
                if any(_inside(h, s) for s in sources)]
        ops += [(str(w), ("--bind", str(w), str(w))) for w in (job_dir, *writable)]
        logs = job_dir / "logs"  # the exit files the wrapper writes: the job may not forge them
        if logs.is_dir():
            ops.append((str(logs), ("--ro-bind", str(logs), str(logs))))
        chain = [sys.executable, "-m", __name__, "default-stop", "--", *argv]
        return [sys.executable, "-m", __name__, "ignore-stop", "--", self.bwrap, *self.flags,
                *_mounts(ops), "--chdir", str(workdir), "--", *chain]


def system_ops() -> list[tuple[str, tuple[str, ...]]]:
    """The read-only system, a fresh /proc, /dev and /tmp, and the GPUs' device files."""
    ops: list[tuple[str, tuple[str, ...]]] = []
    for name in _SYSTEM:
        path = Path(name)
        if path.is_symlink():
            ops.append((name, ("--symlink", os.readlink(path), name)))
        elif path.is_dir():
            ops.append((name, ("--ro-bind", name, name)))
    ops += [("/proc", ("--proc", "/proc")), ("/dev", ("--dev", "/dev")),
            ("/tmp", ("--tmpfs", "/tmp"))]
    devices = [*sorted(Path("/dev").glob("nvidia*")), *map(Path, _DEVICES)]
    ops += [(str(d), ("--dev-bind", str(d), str(d))) for d in devices if d.exists()]
    return ops


def _mounts(ops: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """bwrap's mount options, a folder before anything mounted inside it (bwrap mounts in the
    order given, so a later mount covers an earlier one); equal depths keep their order."""
    ordered = sorted(enumerate(ops), key=lambda item: (len(Path(item[1][0]).parts), item[0]))
    return [arg for _, (_, args) in ordered for arg in args]


def check_isolation(isolation: str) -> Sandbox | None:
    """The sandbox `isolation` asks for (None for `none`), or why it cannot be had."""
    if isolation not in ISOLATIONS:
        raise ThriftyError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    return Sandbox.find() if isolation == "sandbox" else None


def main(argv: list[str]) -> int:
    """`ignore-stop -- CMD` runs CMD with SIGTERM/SIGINT ignored (bwrap's own process);
    `default-stop -- CMD` with them at their defaults (the job, inside the sandbox)."""
    if len(argv) < 3 or argv[0] not in ("ignore-stop", "default-stop") or argv[1] != "--":
        print("usage: python -m thrifty.cluster.sandbox ignore-stop|default-stop -- CMD...",
              file=sys.stderr)
        return 2
    action = signal.SIG_IGN if argv[0] == "ignore-stop" else signal.SIG_DFL
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, action)
    try:
        os.execvp(argv[2], argv[2:])
    except OSError as err:
        print(f"thrifty: cannot start {argv[2]}: {err}", file=sys.stderr, flush=True)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

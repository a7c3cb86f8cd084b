"""Runs one replica and leaves its exit status in a file, for a control plane that restarts.

The local executor starts every replica through this small wrapper, in a session of its own, so
replicas survive a control-plane crash; a restarted control plane is not their parent and cannot
`wait()` for them, so the wrapper writes the replica's exit code to a file it can read instead.
A stop signal reaches the whole process group (wrapper and replica); the wrapper only waits.

    python -m thrifty.cluster.replica EXIT_FILE -- PROGRAM [ARGS...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def write_exit(path: Path, code: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{code}\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m thrifty.cluster.replica EXIT_FILE -- PROGRAM [ARGS...]",
              file=sys.stderr)
        return 2
    exit_file, command = Path(argv[0]), argv[2:]
    # The replica gets the group's signal itself; a no-op handler (not SIG_IGN, which the child
    # would inherit) keeps the wrapper alive to record how the replica ended.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(command)
    except OSError as err:
        print(f"thrifty: cannot start {command[0]}: {err}", file=sys.stderr, flush=True)
        write_exit(exit_file, 127)
        return 127
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
    code = 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
    write_exit(exit_file, code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

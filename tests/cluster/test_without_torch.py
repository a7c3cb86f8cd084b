"""The control plane needs no PyTorch: `thrifty server` runs a job where torch cannot be imported.

Only a job's training code (thrifty.train) needs torch. The server, its API, the scheduling loop,
the policies, the local executor, the replicas' wrapper and the CLI must run where it is absent: a
CPU-only head node, a slim container. Every Python process here (the server, the CLI that
submits, the replica wrapper, the job) finds first on its path a stand-in `torch` package that
writes down who tried to import it, with the stack, and raises ImportError, as a missing package
would. The test fails if any process tried: one that caught the ImportError and went on would
still have depended on torch being there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from server_process import PY, Server

STAND_IN = '''\
import os, sys, traceback
with open(os.environ["NO_TORCH_LOG"], "a") as log:
    log.write(f"pid {os.getpid()} ({' '.join(sys.argv)}) imported torch:\\n"
              + "".join(traceback.format_stack()) + "\\n")
raise ImportError("No module named 'torch' (a test's stand-in: torch is absent here)")
'''

# The job says where `import torch` would load from, without importing it: the stand-in's folder
# proves that the server's environment, stand-in included, reached the job.
JOB = """
name: hello
mode: rigid
entrypoint:
  command:
    - {py}
    - -c
    - "import importlib.util as u; print('torch from', u.find_spec('torch').origin)"
"""


def without_torch(server: Server, folder: Path, log: Path) -> None:
    """Put the stand-in first on the path of `server` and of everything it starts."""
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / "__init__.py").write_text(STAND_IN)
    path = [str(folder), *filter(None, server.env.get("PYTHONPATH", "").split(os.pathsep))]
    server.env.update(PYTHONPATH=os.pathsep.join(path), NO_TORCH_LOG=str(log))


def test_the_server_runs_a_job_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    home, stand_in, imports = tmp_path / "home", tmp_path / "no-torch", tmp_path / "imports.log"
    home.mkdir()
    server = Server(home)
    without_torch(server, stand_in, imports)
    probe = subprocess.run([PY, "-c", "import torch"], env=server.env, capture_output=True,
                           text=True, timeout=60)
    assert probe.returncode == 1 and "torch is absent here" in probe.stderr, probe.stderr
    assert "pid" in imports.read_text()  # the stand-in records an attempt ...
    imports.unlink()  # ... and from here on none may be made

    try:
        server.start()
        spec = tmp_path / "hello.yaml"
        spec.write_text(JOB.format(py=PY))
        submitted = subprocess.run(
            [PY, "-m", "thrifty.cli", "submit", str(spec)], capture_output=True, text=True,
            env={**server.env, "THRIFTY_SERVER": server.url}, timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        token = (home / "token").read_text().strip()
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=30)
        deadline = time.monotonic() + 60
        while (job := http.get(f"/jobs/{job_id}").json())["state"] not in (
                "succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "succeeded", (job["events"], server.output())
        text = http.get(f"/jobs/{job_id}/logs").json()["ranks"][0]["text"]
        assert f"torch from {stand_in / 'torch' / '__init__.py'}" in text
        server.kill(signal.SIGTERM)
        assert server.proc is not None and server.proc.returncode == 0, server.output()
    finally:
        server.close()
    assert not imports.exists(), imports.read_text()


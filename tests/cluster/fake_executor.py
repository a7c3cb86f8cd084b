"""An in-memory executor for driving the scheduler's steps: attempts are entries in a dict.

It implements `thrifty.cluster.executor.Executor`; a test ends an attempt with `finish`, hands a
job a report with `reports`, and makes attempts vanish (as after a lost machine) with `forget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thrifty.cluster.executor import LOST, AttemptStatus, Handle, Launch
from thrifty.contract import EXIT_RESIZE
from thrifty.policy.base import NodeView


class FakeExecutor:
    name = "fake"

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self._nodes = tuple(nodes)
        self.codes: dict[str, list[int | None]] = {}
        self.launches: list[Launch] = []
        self.stopped: list[str] = []
        self.reports: dict[str, dict[str, Any]] = {}  # job id -> newest report
        self.fail_launch: set[str] = set()  # job ids whose launch raises

    def nodes(self) -> tuple[NodeView, ...]:
        return self._nodes

    def launch(self, launch: Launch) -> Handle:
        if launch.job_id in self.fail_launch:
            raise RuntimeError("no such program")
        key = f"{launch.job_id}/{launch.attempt}"
        self.codes[key] = [None] * launch.allocation.num_replicas
        self.launches.append(launch)
        return {"key": key, "job": launch.job_id}

    def poll(self, handle: Handle) -> AttemptStatus:
        codes = self.codes.get(handle.get("key", ""))
        if codes is None:
            return AttemptStatus([LOST], "its node is gone")
        return AttemptStatus(list(codes), "", {"report": self.reports.get(handle["job"])})

    def stop(self, handles: Sequence[Handle], grace_s: float) -> None:
        for handle in handles:
            codes = self.codes.get(handle.get("key", ""))
            if codes is not None:
                self.stopped.append(handle["key"])
                codes[:] = [EXIT_RESIZE if c is None else c for c in codes]

    def adopt(self, handle: Handle) -> bool:
        codes = self.codes.get(handle.get("key", ""))
        return codes is not None and any(c is None for c in codes)

    def close(self) -> None:
        pass

    # ---- what a test does to the attempts -----------------------------------------------------

    def finish(self, job_id: str, code: int = 0) -> None:
        """Every replica of the job's newest attempt exits with `code`."""
        key = max((k for k in self.codes if k.startswith(f"{job_id}/")),
                  key=lambda k: int(k.rsplit("/", 1)[1]))
        self.codes[key] = [code] * len(self.codes[key])

    def forget(self) -> None:
        """Every attempt vanishes, as when the executor's processes died with the machine."""
        self.codes.clear()

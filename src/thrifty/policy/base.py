"""The values every policy reads and returns, and the interface a policy implements.

A policy sees jobs (`JobView`) and nodes (`ClusterView`) and grants each job an `Allocation`:
GPUs per node, all of one kind. The simulator and the live scheduler build these views from their
own state, so one policy object serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from thrifty.contract import Allocation
from thrifty.goodput import BatchLimits, GoodputModel

__all__ = ["Allocation", "ClusterView", "JobView", "NodeView", "Policy", "PolicyWrapper"]


@dataclass(frozen=True)
class NodeView:
    name: str
    gpu_kind: str
    num_gpus: int
    price_per_hour: float = 0.0  # USD per node-hour


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeView, ...]

    @cached_property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({n.gpu_kind for n in self.nodes}))

    @property
    def num_gpus(self) -> int:
        return sum(n.num_gpus for n in self.nodes)

    def gpus_of(self, kind: str) -> int:
        return sum(n.num_gpus for n in self.nodes if n.gpu_kind == kind)

    def nodes_of(self, kind: str) -> tuple[NodeView, ...]:
        return tuple(n for n in self.nodes if n.gpu_kind == kind)


class Oracle(Protocol):
    """True performance of a simulated job, for baselines defined with oracle knowledge."""

    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float | None:
        """Seconds per optimizer step at a total batch, or None if that cannot run."""
        ...

    def remaining_steps(self, batch_size: int) -> float:
        """Optimizer steps left to finish training at a fixed total batch."""
        ...


@dataclass
class JobView:
    """What a policy knows about one active job.

    `attained_service` is in GPU-seconds. `max_replicas` is the most GPUs the job may use now
    (adaptive jobs grow into placements gradually, by Pollux's rule: twice what they have run
    with); `replica_limit` is the most it could ever use (its largest batch at the smallest
    per-GPU batch), for a policy that explores by a rule of its own. `requested_*` is the
    owner's own request, which rigid policies honour. `restart_seconds` is the policy's estimate
    of a restart's cost. `deadline` (seconds, on the same clock as `now`) is when the job's
    owner needs it finished, if they said so: a carbon-aware wrapper may start it later.
    """

    id: str
    submit_time: float
    application: str = ""
    owner: str = ""
    model: GoodputModel | None = None
    limits: BatchLimits | None = None
    allocation: Allocation | None = None
    restarts: int = 0
    attained_service: float = 0.0
    min_replicas: int = 0
    max_replicas: int = 64
    replica_limit: int | None = None
    requested_replicas: int | None = None
    requested_batch_size: int | None = None
    restart_seconds: float = 30.0
    deadline: float | None = None
    oracle: Oracle | None = field(default=None, repr=False)

    def age(self, now: float) -> float:
        return max(now - self.submit_time, 0.0)


class Policy(Protocol):
    """A scheduling policy: deterministic for a seed, stateful only in what it remembers."""

    name: str
    adaptive: bool  # True: jobs choose their own batch sizes; False: owners' requests are honoured
    heterogeneity_aware: bool  # False: the policy treats every GPU kind alike

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]: ...


class PolicyWrapper:
    """A policy around another that adds to each round (metering, held starts, recording).

    Whoever runs it (the simulator, the control plane) reads the inner policy's name and
    capabilities through the wrapper, so any attribute the wrapper lacks is the inner one's.
    """

    def __init__(self, inner: Policy):
        self.inner = inner
        self.name = inner.name
        self.adaptive = inner.adaptive
        self.heterogeneity_aware = inner.heterogeneity_aware

    def __getattr__(self, name: str) -> Any:
        # Capabilities beyond the protocol (e.g. `profiles_on_arrival`) stay visible too.
        if name == "inner":  # not set yet (copying, unpickling): no recursion through it
            raise AttributeError(name)
        return getattr(self.inner, name)

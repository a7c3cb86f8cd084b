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

from thrifty.contract import Allocation  # the policies' answer: here beside the views
from thrifty.goodput import BatchLimits, GoodputModel


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
    """What a baseline defined with oracle knowledge (Gavel, Optimus) asks about a job's speed
    and length. The simulator answers from the job's measured profile; a live scheduler answers
    from the job's reported model (`thrifty.policy.oracle.ModelOracle`)."""

    def step_seconds(self, kind: str, placement: tuple[int, ...], batch_size: int) -> float | None:
        """Seconds per optimizer step at a total batch, or None if that cannot run (or is not
        known)."""
        ...

    def remaining_steps(self, batch_size: int) -> float | None:
        """Optimizer steps left to finish training at a fixed total batch, or None when the job
        has not said where it ends."""
        ...


@dataclass
class JobView:
    """What a policy knows about one active job.

    `attained_service` is in GPU-seconds. `max_replicas` is the most GPUs the job may use now
    (adaptive jobs grow into placements gradually, by Pollux's rule: twice what they have run
    with); `replica_limit` is the most it could ever use (its largest batch at the smallest
    per-GPU batch), for a policy that explores by a rule of its own. `requested_*` is the
    owner's own request, which rigid policies honour. `restart_s` is the policy's estimate
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
    restart_s: float = 30.0
    deadline: float | None = None
    oracle: Oracle | None = field(default=None, repr=False)

    def age(self, now: float) -> float:
        return max(now - self.submit_time, 0.0)


class Policy(Protocol):
    """A scheduling policy: deterministic for a seed, stateful only in what it remembers.

    The capabilities tell whoever runs the policy (the simulator, the live scheduler) how to
    prepare the jobs it sees; `BasePolicy` gives every one a default.
    """

    name: str
    adaptive: bool  # True: jobs choose their own batch sizes; False: owners' requests are honoured
    heterogeneity_aware: bool  # False: the policy treats every GPU kind alike
    profiles_on_arrival: bool  # True: each new job is measured on one GPU of every kind first
    needs_oracle: bool  # True: the policy reads `JobView.oracle` (speed and length of a job)

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]: ...


class BasePolicy:
    """What every policy inherits: its name and the capabilities its runner reads, with the
    defaults of a plain rigid policy. A policy overrides only the ones that differ, as class
    attributes, so they are read as `policy.needs_oracle` without guessing."""

    name: str = "policy"
    adaptive: bool = False
    heterogeneity_aware: bool = False
    profiles_on_arrival: bool = False
    needs_oracle: bool = False

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        raise NotImplementedError


class PolicyWrapper(BasePolicy):
    """A policy around another that adds to each round (metering, held starts, recording).

    Whoever runs it (the simulator, the control plane) reads the inner policy's name and
    capabilities through the wrapper: each is a property reading the inner policy, so a wrapper
    never hides what the policy it wraps needs. Anything else the wrapper lacks (a policy's own
    reports, such as Gavel's `last_fractions`) is looked up on the inner policy as well.
    """

    def __init__(self, inner: Policy):
        self.inner = inner

    @property  # type: ignore[override]
    def name(self) -> str:
        return self.inner.name

    @property  # type: ignore[override]
    def adaptive(self) -> bool:
        return self.inner.adaptive

    @property  # type: ignore[override]
    def heterogeneity_aware(self) -> bool:
        return self.inner.heterogeneity_aware

    @property  # type: ignore[override]
    def profiles_on_arrival(self) -> bool:
        return self.inner.profiles_on_arrival

    @property  # type: ignore[override]
    def needs_oracle(self) -> bool:
        return self.inner.needs_oracle

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        return self.inner.allocate(jobs, cluster, now)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying, unpickling): no recursion through it
            raise AttributeError(name)
        return getattr(self.inner, name)

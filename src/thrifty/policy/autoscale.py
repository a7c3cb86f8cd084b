"""Goodput-driven autoscaling of a cloud cluster: rent a node while it is worth its price.

A cloud bills every node it holds, busy or idle, from the moment the node is requested; a fixed
cluster sized for the busiest hour pays for idle GPUs the rest of the time, and for GPUs a job
can barely use (a large job scales sub-linearly). Pollux (OSDI'21, §4.4) sized its cloud cluster by
the jobs' own goodput models; this module follows that idea with its own rule:

* The worth of a set of nodes is the cluster's goodput `U`: the sum of the active jobs' speed-ups
  (goodput over their goodput on one GPU) when the GPUs are divided greedily by marginal speed-up
  per GPU, each job on one GPU kind, in the configurations the policies use (1, 2, 4 GPUs in a
  node, then whole nodes; `thrifty.policy.configs`).
* **Grow** by `k` nodes of a shape while their marginal goodput per dollar, (U(+k) − U) / (k ·
  price), is at least `grow_threshold` × the held nodes' average, U / cost. Looking `k` nodes ahead
  lets a job that only gains from several nodes at once (a rigid request of 16 GPUs) be served.
  With no node held, any gain is worth a first node.
* **Release** a node only when nothing is allocated on it, so no job is ever stopped: at once when
  its marginal goodput per dollar is below `shrink_threshold` × the average (a lower bar than the
  one to grow: the gap is the hysteresis that keeps a node from flapping), or when it has stayed
  idle for `idle_timeout_s` (the policy does not want it, whatever the estimate says: thrifty's
  policy moves a running job only for a clear gain). A shape released for idleness grows again
  only after `regrow_after_s`, or as soon as a job arrives or finishes.
* A requested node is usable `provision_delay_s` later and billed from its request; the fleet
  stays within `min_nodes` and `max_nodes` (and each shape within its own count).

Nodes of one GPU kind form one shape (one node size, one price): the decision is a pure function
of the jobs' views and the fleet (`decide`), here so that the simulator and a live cluster can
share it; `thrifty.sim.autoscale.Autoscaler` keeps the fleet's state for the simulator and
records every node's timeline for the bill.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from thrifty.errors import ThriftyError
from thrifty.goodput import speedup_over_one_gpu
from thrifty.policy.base import ClusterView, JobView, NodeView
from thrifty.policy.configs import GoodputTable

_EPS = 1e-9


@dataclass(frozen=True)
class AutoscaleConfig:
    """How a cloud cluster scales (documented defaults).

    `min_nodes`/`max_nodes`: nodes held at least/at most (None: every node of the pool).
    `provision_delay_s` (180): seconds from a request until the node can run jobs (cloud
    instances boot and join in two to five minutes). `grow_threshold` (0.5): a node is added while
    its marginal goodput per dollar is at least this share of the cluster's average — growing
    while the local scaling exponent of goodput in cost stays above one half.
    `shrink_threshold` (0.25): an idle node whose marginal goodput per dollar is below this share
    is released at once. `idle_timeout_s` (300): an idle node is released after this long anyway.
    `regrow_after_s` (1800): how long a shape released for idleness waits before growing again
    while the same jobs run (each retry would pay a boot and an idle spell for nothing).
    """

    min_nodes: int = 0
    max_nodes: int | None = None
    provision_delay_s: float = 180.0
    grow_threshold: float = 0.5
    shrink_threshold: float = 0.25
    idle_timeout_s: float = 300.0
    regrow_after_s: float = 1800.0

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ThriftyError(f"autoscale.{problem[0]}: {problem[1]}")

    def problem(self) -> tuple[str, str] | None:
        """(setting, what is wrong with it) for the first bad setting, else None."""
        for name in ("min_nodes", "provision_delay_s", "idle_timeout_s", "regrow_after_s",
                     "grow_threshold", "shrink_threshold"):
            if getattr(self, name) < 0:
                return name, f"must be ≥ 0, got {getattr(self, name)}"
        if self.max_nodes is not None and self.max_nodes < max(self.min_nodes, 1):
            return "max_nodes", (f"{self.max_nodes} must be at least 1 and at least min_nodes "
                                 f"({self.min_nodes})")
        if self.shrink_threshold > self.grow_threshold:
            return "shrink_threshold", (
                f"{self.shrink_threshold} is above grow_threshold ({self.grow_threshold}); keep "
                "it lower, the gap keeps nodes from flapping"
            )
        return None


# --- the cluster's goodput for a given number of GPUs per kind ------------------------------


@dataclass(frozen=True)
class SpeedupTable:
    """Each job's speed-up on every configuration of the whole pool, computed once per round;
    any smaller fleet is the same table under a smaller capacity per kind."""

    speedup: NDArray[np.float64]  # (jobs, configurations)
    count: NDArray[np.int64]  # GPUs per configuration
    kind: NDArray[np.int64]  # index into `kinds`
    kinds: tuple[str, ...]

    @classmethod
    def build(cls, jobs: Sequence[JobView], table: GoodputTable) -> SpeedupTable:
        configs = table.configs
        goodput = table.rows(jobs) if jobs else np.zeros((0, len(configs)))
        for i, job in enumerate(jobs):
            if job.model is None and job.max_replicas > 1:  # a rigid request: all or nothing
                goodput[i] = _rigid_row(job.max_replicas, configs.count, configs.kind)
        speedup = speedup_over_one_gpu(goodput, configs.count)
        return cls(speedup, configs.count, configs.kind, configs.kinds)

    def capacity(self, gpus: Mapping[str, int]) -> NDArray[np.int64]:
        return np.array([gpus.get(k, 0) for k in self.kinds], dtype=np.int64)


def _rigid_row(replicas: int, count: NDArray[np.int64], kind: NDArray[np.int64]
               ) -> NDArray[np.float64]:
    """A job that runs only at its requested size: worth that many GPUs' work (linear), on the
    smallest configuration of each kind that holds it."""
    row = np.zeros(len(count))
    for k in np.unique(kind):
        fits = np.flatnonzero((kind == k) & (count >= replicas))
        if len(fits):
            row[fits[np.argmin(count[fits])]] = float(replicas)
    return row


def cluster_goodput(table: SpeedupTable, capacity: NDArray[np.int64]) -> float:
    """Sum of speed-ups when GPUs go, one upgrade at a time, to the job and configuration with the
    largest gain in speed-up per extra GPU (water-filling; a job keeps its GPU kind).

    Looking past the next configuration to every larger one lets a job cross a dip (5 GPUs on two
    nodes slower than 4 on one) to where it gains again (8 on two).
    """
    speedup, count, kind = table.speedup, table.count, table.kind
    jobs = speedup.shape[0]
    if jobs == 0 or not capacity.any():
        return 0.0
    free = capacity.astype(np.int64).copy()
    held = np.full(jobs, -1, dtype=np.int64)
    value = np.zeros(jobs)
    gpus = np.zeros(jobs, dtype=np.int64)
    while True:
        extra = count[None, :] - gpus[:, None]
        gain = speedup - value[:, None]
        same_kind = (held[:, None] < 0) | (kind[None, :] == np.where(held >= 0, kind[held], -1)[
            :, None])
        fits = extra <= free[kind][None, :]
        ok = (extra > 0) & (gain > _EPS) & same_kind & fits
        if not ok.any():
            break
        ratio = np.where(ok, gain / np.maximum(extra, 1), -np.inf)
        flat = int(np.argmax(ratio))
        job, config = divmod(flat, ratio.shape[1])
        free[kind[config]] -= int(extra[job, config])
        held[job], value[job], gpus[job] = config, speedup[job, config], count[config]
    return float(value.sum())


# --- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """What the cloud holds at one instant, as the decision sees it.

    `pool` is every node the cluster may ever hold (names fixed in advance), `ready` and `pending`
    the held ones (usable now, or still booting), `busy` the ready nodes with GPUs allocated,
    `idle_since` when each other ready node last became idle, `quiet_until` the time before which
    a shape released for idleness may not grow again.
    """

    pool: tuple[NodeView, ...]
    ready: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    busy: frozenset[str] = frozenset()
    idle_since: Mapping[str, float] = field(default_factory=dict)
    quiet_until: Mapping[str, float] = field(default_factory=dict)

    def node(self, name: str) -> NodeView:
        return self.by_name[name]

    @cached_property
    def by_name(self) -> dict[str, NodeView]:
        return {n.name: n for n in self.pool}

    @property
    def held(self) -> tuple[str, ...]:
        return self.ready + self.pending


@dataclass(frozen=True)
class Decision:
    request: tuple[str, ...] = ()  # pool nodes to rent now
    release: tuple[str, ...] = ()  # held, idle nodes to give back now
    refused: frozenset[str] = frozenset()  # kinds whose nodes the policy left idle too long


def node_price(node: NodeView) -> float:
    """USD per node-hour; a node without a price counts its GPUs, so that shapes still compare
    (a cluster priced only by a sheet is priced before it is scaled: see `sim.costing`)."""
    return node.price_per_hour if node.price_per_hour > 0 else float(node.num_gpus)


def _gpus(nodes: Sequence[NodeView]) -> dict[str, int]:
    per_kind: dict[str, int] = {}
    for node in nodes:
        per_kind[node.gpu_kind] = per_kind.get(node.gpu_kind, 0) + node.num_gpus
    return per_kind


def decide(jobs: Sequence[JobView], fleet: Fleet, now: float, config: AutoscaleConfig,
           goodput: GoodputTable | None = None) -> Decision:
    """Which nodes to rent and which to give back now (see the module docstring for the rule).

    `goodput` may carry the jobs' goodput rows over from the last round (it must be built for
    the whole pool); it only saves time.
    """
    nodes = fleet.by_name
    if goodput is None:
        goodput = GoodputTable(ClusterView(fleet.pool), fill_a_node=True)
    table = SpeedupTable.build(jobs, goodput)
    held = [nodes[n] for n in fleet.held]
    release, refused = _releases(table, fleet, held, now, config)
    held = [n for n in held if n.name not in release]
    quiet = {k for k, until in fleet.quiet_until.items() if until > now} | refused
    request = _requests(table, fleet, held, set(release), quiet, config)
    return Decision(request=request, release=release, refused=frozenset(refused))


def _worth(table: SpeedupTable, nodes: Sequence[NodeView]) -> tuple[float, float]:
    """(goodput, USD per hour) of a set of nodes."""
    return cluster_goodput(table, table.capacity(_gpus(nodes))), math.fsum(map(node_price, nodes))


def _releases(table: SpeedupTable, fleet: Fleet, held: list[NodeView], now: float,
              config: AutoscaleConfig) -> tuple[tuple[str, ...], set[str]]:
    """Idle nodes to give back, and the kinds of those the policy left idle too long."""
    out: list[str] = []
    refused: set[str] = set()
    idle = sorted((n for n in fleet.ready if n not in fleet.busy),
                  key=lambda n: (fleet.idle_since.get(n, now), n), reverse=True)
    for name in idle:
        if len(held) <= config.min_nodes:
            break
        node = fleet.node(name)
        goodput, cost = _worth(table, held)
        rest = [n for n in held if n.name != name]
        lost = goodput - _worth(table, rest)[0]
        average = goodput / cost if cost > 0 else 0.0
        timed_out = now - fleet.idle_since.get(name, now) >= config.idle_timeout_s
        useless = lost <= _EPS or lost / node_price(node) < config.shrink_threshold * average
        if timed_out or useless:
            out.append(name)
            held = rest
            if timed_out and not useless:
                refused.add(node.gpu_kind)
    return tuple(out), refused


def _requests(table: SpeedupTable, fleet: Fleet, held: list[NodeView], released: set[str],
              quiet: set[str], config: AutoscaleConfig) -> tuple[str, ...]:
    """Nodes to rent: up to the floor, then the best bundle per dollar while it is worth it."""
    cap = config.max_nodes if config.max_nodes is not None else len(fleet.pool)
    held_names = {n.name for n in held} | released
    spare = [n for n in fleet.pool if n.name not in held_names]
    out: list[str] = []
    while len(held) < config.min_nodes and spare:  # the floor first, cheapest shape first
        node = min(spare, key=lambda n: (node_price(n) / n.num_gpus, fleet.pool.index(n)))
        spare.remove(node)
        held.append(node)
        out.append(node.name)
    while len(held) < cap:
        goodput, cost = _worth(table, held)
        best: tuple[float, list[NodeView]] | None = None
        for kind in sorted({n.gpu_kind for n in spare}):
            if kind in quiet:
                continue
            of_kind = [n for n in spare if n.gpu_kind == kind]
            ahead = min(len(of_kind), cap - len(held), _lookahead(table, of_kind[0]))
            for k in range(1, ahead + 1):
                more = of_kind[:k]
                gain = _worth(table, held + more)[0] - goodput
                per_usd = gain / math.fsum(map(node_price, more))
                if gain > _EPS and (best is None or per_usd > best[0] + _EPS):
                    best = (per_usd, more)
        if best is None:
            break
        average = goodput / cost if cost > 0 else 0.0
        if best[0] < config.grow_threshold * average - _EPS:
            break
        for node in best[1]:
            spare.remove(node)
            held.append(node)
            out.append(node.name)
    return tuple(out)


def _lookahead(table: SpeedupTable, node: NodeView) -> int:
    """Most nodes of this shape any one job could use: how far ahead growth has to look."""
    k = table.kinds.index(node.gpu_kind) if node.gpu_kind in table.kinds else -1
    usable = (table.kind == k)[None, :] & (table.speedup > 0)
    most = int(np.where(usable, table.count[None, :], 0).max(initial=0))
    return max(1, -(-most // node.num_gpus))

"""Autoscaling in the simulator: the `[autoscale]` table of a cluster file, and the fleet a run
rents over time.

The decision itself (when a node is worth its price, which idle node to give back) is pure and
lives in `thrifty.policy.autoscale`; this module keeps what only the simulator has: the nodes
it has rented, when each became usable and idle, and their timelines for the bill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thrifty.errors import InputError, ThriftyError
from thrifty.policy.autoscale import AutoscaleConfig, Decision, Fleet, decide
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.configs import GoodputTable

_EPS = 1e-9  # the decision's tolerance: a node booted by `now` within it is ready


# --- reading the [autoscale] table of a cluster file ---------------------------------------

_KEYS = set(AutoscaleConfig.__dataclass_fields__)


def parse_autoscale(path: str, raw: Any) -> AutoscaleConfig:
    """The `[autoscale]` table of a cluster TOML file; errors name the key at fault."""
    if not isinstance(raw, dict):
        raise InputError(path, "must be a table of settings", field="autoscale")
    unknown = set(raw) - _KEYS
    if unknown:
        raise InputError(path, f"unknown key(s) {', '.join(sorted(unknown))} (known: "
                         f"{', '.join(sorted(_KEYS))})", field="autoscale")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"autoscale.{key}"
        integer = key in ("min_nodes", "max_nodes")
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool) or value < 0:
            kind = "a non-negative integer" if integer else "a non-negative number"
            raise InputError(path, f"must be {kind}, got {value!r}", field=where)
        values[key] = int(value) if integer else float(value)
    try:
        return AutoscaleConfig(**values)
    except ThriftyError as err:  # "autoscale.<setting>: <what is wrong>"
        name, _, message = str(err).removeprefix("autoscale.").partition(": ")
        raise InputError(path, message, field=f"autoscale.{name}") from None


# --- the fleet over time, for the simulator -------------------------------------------------


@dataclass
class NodeRecord:
    """One rented node: billed from `requested_s` to `released_s` (None while held)."""

    name: str
    gpu_kind: str
    num_gpus: int
    usd_per_hour: float
    requested_s: float
    ready_s: float
    released_s: float | None = None

    def held_seconds(self, end_s: float) -> float:
        return max((self.released_s if self.released_s is not None else end_s)
                   - self.requested_s, 0.0)


class Autoscaler:
    """The fleet's state between rounds; each round the simulator asks for the usable nodes
    (`view`) and then reports the new allocations (`step`). One object serves one run: it
    remembers every node it rented."""

    def __init__(self, pool: Sequence[NodeView], config: AutoscaleConfig | None = None):
        if not pool:
            raise ThriftyError("autoscale: the cluster has no nodes to rent")
        sizes: dict[str, tuple[int, float]] = {}
        for node in pool:
            shape = (node.num_gpus, node.price_per_hour)
            if sizes.setdefault(node.gpu_kind, shape) != shape:
                raise ThriftyError(
                    f"autoscale: nodes of GPU kind '{node.gpu_kind}' differ in GPUs or price; "
                    "an autoscaled cluster has one node shape per GPU kind"
                )
        self.pool = tuple(pool)
        self.config = config or AutoscaleConfig()
        if self.config.min_nodes > len(self.pool):
            raise ThriftyError(
                f"autoscale: min_nodes ({self.config.min_nodes}) exceeds the {len(self.pool)} "
                "nodes of the cluster"
            )
        self.records: dict[str, NodeRecord] = {}  # held nodes
        self.released: list[NodeRecord] = []
        self._idle_since: dict[str, float] = {}
        self._quiet_until: dict[str, float] = {}
        self._view: ClusterView | None = None
        self._jobs: frozenset[str] = frozenset()
        self._goodput = GoodputTable(ClusterView(self.pool), fill_a_node=True)
        self._ready: tuple[str, ...] = ()

    # --- what the policy sees --------------------------------------------------------------
    def view(self, now: float) -> ClusterView:
        """Held nodes that have finished booting, in pool order (the same object while they do
        not change, so a policy's per-cluster caches survive)."""
        ready = tuple(n.name for n in self.pool
                      if n.name in self.records and self.records[n.name].ready_s <= now + _EPS)
        if self._view is None or ready != self._ready:
            by_name = {n.name: n for n in self.pool}
            self._ready = ready
            self._view = ClusterView(tuple(by_name[n] for n in ready))
        return self._view

    # --- the round's decision ----------------------------------------------------------------
    def step(self, jobs: Sequence[JobView], allocations: Mapping[str, Allocation], now: float
             ) -> Decision:
        ids = frozenset(j.id for j in jobs)
        if ids != self._jobs:  # new work, or work done: the policy may want nodes again
            self._quiet_until.clear()
            self._jobs = ids
        busy = frozenset(node for a in allocations.values() for node in a.gpus)
        for name in self._ready:
            if name in busy:
                self._idle_since.pop(name, None)
            else:
                self._idle_since.setdefault(name, now)
        fleet = Fleet(
            pool=self.pool,
            ready=self._ready,
            pending=tuple(n for n in self.records if n not in self._ready),
            busy=busy,
            idle_since=dict(self._idle_since),
            quiet_until=dict(self._quiet_until),
        )
        decision = decide(jobs, fleet, now, self.config, self._goodput)
        self._apply(decision, fleet, now)
        return decision

    def _apply(self, decision: Decision, fleet: Fleet, now: float) -> None:
        for name in decision.release:
            if name in fleet.busy or name not in self._ready:
                raise ThriftyError(f"autoscale: refusing to release node '{name}' in use")
            record = self.records.pop(name)
            record.released_s = now
            self.released.append(record)
            self._idle_since.pop(name, None)
        for kind in decision.refused:
            self._quiet_until[kind] = now + self.config.regrow_after_s
        for name in decision.request:
            node = fleet.node(name)
            self.records[name] = NodeRecord(
                name, node.gpu_kind, node.num_gpus, node.price_per_hour, now,
                now + self.config.provision_delay_s,
            )
        if decision.release:
            self._ready = tuple(n for n in self._ready if n not in decision.release)
            self._view = None

    def finish(self, end_s: float) -> list[NodeRecord]:
        """Every node rented during the run, the held ones released at `end_s`."""
        for record in self.records.values():
            record.released_s = max(end_s, record.requested_s)
        out = sorted(self.released + list(self.records.values()),
                     key=lambda r: (r.requested_s, r.name))
        self.released, self.records = out, {}
        return out

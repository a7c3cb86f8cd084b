"""Configurations (GPU kind, GPU count), each job's goodput on every one, and the integer program
that picks at most one configuration per job under each kind's capacity.

This is the machinery Sia (SOSP'23) introduced for heterogeneous clusters; Sia's policy and
thrifty's own differ only in the value they give each (job, configuration) pair, so both build on
this module. Counts are powers of two inside one node, then whole nodes: a job never straddles
nodes partially, which keeps every chosen set placeable without fragmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from thrifty.goodput import GoodputModel, progress_rate
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.placement import place_counts
from thrifty.policy.solver_output import quiet_solver


@dataclass(frozen=True)
class Configs:
    """Every configuration of a cluster, as parallel arrays (one entry per configuration)."""

    kinds: tuple[str, ...]  # the cluster's GPU kinds
    kind: NDArray[np.int64]  # index into `kinds`
    count: NDArray[np.int64]  # GPUs
    nodes: NDArray[np.int64]  # nodes the GPUs span
    node_size: dict[str, int]
    capacity: NDArray[np.int64]  # GPUs per kind

    def __len__(self) -> int:
        return len(self.count)

    def of(self, index: int) -> tuple[str, int]:
        return self.kinds[int(self.kind[index])], int(self.count[index])


def cluster_configs(cluster: ClusterView) -> Configs:
    """1, 2, 4 … GPUs inside one node, then 1, 2 … whole nodes, for every GPU kind."""
    kind_index: list[int] = []
    counts: list[int] = []
    spans: list[int] = []
    sizes: dict[str, int] = {}
    for k, kind in enumerate(cluster.kinds):
        nodes = cluster.nodes_of(kind)
        size = max(n.num_gpus for n in nodes)
        sizes[kind] = size
        count = 1
        while count < size:
            kind_index.append(k)
            counts.append(count)
            spans.append(1)
            count *= 2
        for whole in range(1, len(nodes) + 1):
            kind_index.append(k)
            counts.append(whole * size)
            spans.append(whole)
    return Configs(
        kinds=cluster.kinds,
        kind=np.array(kind_index, dtype=np.int64),
        count=np.array(counts, dtype=np.int64),
        nodes=np.array(spans, dtype=np.int64),
        node_size=sizes,
        capacity=np.array([cluster.gpus_of(k) for k in cluster.kinds], dtype=np.int64),
    )


def config_of(alloc: Allocation | None, configs: Configs) -> int:
    """Index of the configuration an allocation has, or -1 (none, or an irregular shape)."""
    if alloc is None or alloc.kind not in configs.kinds:
        return -1
    k = configs.kinds.index(alloc.kind)
    match = np.flatnonzero(
        (configs.kind == k) & (configs.count == alloc.num_replicas)
        & (configs.nodes == alloc.num_nodes)
    )
    return int(match[0]) if len(match) else -1


class GoodputTable:
    """Each job's goodput (scale-invariant steps per second) on every configuration.

    A job that has run multi-GPU on one kind but only been profiled on one GPU of another gets the
    other kind's multi-GPU goodput projected by the ratio of their one-GPU goodputs, as Sia does:
    that lets a new job's first placement compare kinds without trying each at scale. Rows are
    cached per job and recomputed only when the job's throughput model or gradient statistics
    change, which keeps a round cheap at thousands of jobs.
    """

    def __init__(self, cluster: ClusterView, fill_a_node: bool = False):
        self.cluster = cluster
        self.configs = cluster_configs(cluster)
        # Explore inside one node at once (up to the job's replica limit) rather than doubling
        # round by round: synchronisation within a node is cheap and rarely surprises.
        self.fill_a_node = fill_a_node
        self._rows: dict[str, tuple[GoodputModel | None, tuple, NDArray[np.float64]]] = {}
        self.builds = 0  # rows computed (not taken from the cache), for tests and profiling

    @classmethod
    def for_cluster(
        cls, table: GoodputTable | None, cluster: ClusterView, fill_a_node: bool = False
    ) -> GoodputTable:
        """`table` if it was built for this cluster (keeping its cached rows), else a new one."""
        if table is not None and table.cluster == cluster and table.fill_a_node == fill_a_node:
            return table
        return cls(cluster, fill_a_node)

    def rows(self, jobs: Sequence[JobView]) -> NDArray[np.float64]:
        """Every job's row; a job's cached row is reused while its model predicts the same (by
        value: a model re-parsed every round, or one that has only made progress, still hits)
        and its replica limits are unchanged."""
        table = np.zeros((len(jobs), len(self.configs)))
        live: dict[str, tuple[GoodputModel | None, tuple, NDArray[np.float64]]] = {}
        for i, job in enumerate(jobs):
            model = job.model
            limits = (job.max_replicas, job.replica_limit)
            cached = self._rows.get(job.id)
            if cached is not None and cached[1] == limits and _same(cached[0], model):
                row = cached[2]
            else:
                row = self.row(job, model)
                self.builds += 1
            live[job.id] = (model, limits, row)
            table[i] = row
        self._rows = live
        return table

    def row(self, job: JobView, model: GoodputModel | None) -> NDArray[np.float64]:
        """`job`'s goodput on every configuration under `model`, not cached."""
        c = self.configs
        row = np.zeros(len(c))
        allowed = c.count <= max(job.max_replicas, 1)
        if self.fill_a_node and job.replica_limit is not None:
            allowed |= (c.nodes == 1) & (c.count <= job.replica_limit)
        if model is None:  # never measured: every kind alike, one GPU
            row[(c.count == 1) & allowed] = 1.0
            return row
        per_kind: dict[str, NDArray[np.float64]] = {}
        for k, kind in enumerate(c.kinds):
            mask = c.kind == k
            if kind in model.throughput:
                per_kind[kind] = progress_rate(model, kind, c.nodes[mask], c.count[mask])
        explored = {k: model.explored.get(k, 0) for k in per_kind}
        reference = max(per_kind, key=lambda k: (explored[k], k in model.throughput), default=None)
        for k, kind in enumerate(c.kinds):
            mask = c.kind == k
            if kind not in per_kind:
                continue
            values = per_kind[kind]
            if reference is not None and explored[kind] <= 1 < explored[reference]:
                values = _projected(values, per_kind[reference], c.count[mask],
                                    c.count[c.kind == c.kinds.index(reference)])
            row[mask] = values
        row[~allowed] = 0.0
        return row


def _same(old: GoodputModel | None, new: GoodputModel | None) -> bool:
    if old is None or new is None:
        return old is new
    return old is new or old.same_predictions(new)


def _projected(
    own: NDArray[np.float64], ref: NDArray[np.float64],
    own_counts: NDArray[np.int64], ref_counts: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Multi-GPU goodput of a kind seen on one GPU only, from a kind seen at scale."""
    own_one = own[own_counts == 1]
    ref_one = ref[ref_counts == 1]
    if not len(own_one) or not len(ref_one) or ref_one[0] <= 0:
        return own
    ratio = own_one[0] / ref_one[0]
    by_count = dict(zip(ref_counts.tolist(), ref.tolist(), strict=True))
    projected = np.array([by_count.get(n, 0.0) * ratio for n in own_counts.tolist()])
    return np.where(own_counts == 1, own, projected)


def choose_configs(
    values: NDArray[np.float64],
    configs: Configs,
    time_limit_s: float = 10.0,
    mip_rel_gap: float = 1e-3,
) -> NDArray[np.int64]:
    """The configuration (index, or -1 for none) of each job maximising the summed `values`,
    at most one per job and within each kind's GPUs. Non-positive values are never chosen."""
    jobs = values.shape[0]
    choice = np.full(jobs, -1, dtype=np.int64)
    rows, cols = np.nonzero(values > 0)
    if not len(rows):
        return choice
    count = len(rows)
    one_each = csr_array((np.ones(count), (rows, np.arange(count))), shape=(jobs, count))
    kinds = configs.kind[cols]
    per_kind = csr_array(
        (configs.count[cols].astype(float), (kinds, np.arange(count))),
        shape=(len(configs.kinds), count),
    )
    with quiet_solver():  # HiGHS prints debug lines to stdout, whatever its options say
        result = milp(
            c=-values[rows, cols],
            integrality=np.ones(count),
            bounds=Bounds(0, 1),
            constraints=[
                LinearConstraint(one_each, -np.inf, 1),
                LinearConstraint(per_kind, -np.inf, configs.capacity.astype(float)),
            ],
            options={"time_limit": time_limit_s, "mip_rel_gap": mip_rel_gap},
        )
    if result.x is None:  # the solver found nothing in time: leave everyone as they are
        return choice
    picked = np.flatnonzero(result.x > 0.5)
    choice[rows[picked]] = cols[picked]
    return choice


def place_configs(
    choice: NDArray[np.int64],
    jobs: Sequence[JobView],
    configs: Configs,
    cluster: ClusterView,
) -> dict[str, Allocation]:
    """Nodes for every chosen configuration (`placement.place_counts`): a job whose
    configuration did not change keeps its nodes, the rest are placed largest first."""
    wants: list[tuple[str, str, int, float]] = []
    keep: dict[str, Allocation] = {}
    for i, job in enumerate(jobs):
        c = int(choice[i])
        if c < 0:
            continue
        kind, count = configs.of(c)
        wants.append((job.id, kind, count, job.submit_time))
        if job.allocation is not None and config_of(job.allocation, configs) == c:
            keep[job.id] = job.allocation
    return place_counts(wants, keep, cluster)


class ConfigPolicy(BasePolicy):
    """A policy that gives every (job, configuration) pair a value and lets `choose_configs`
    pick at most one configuration per job: Sia's shape, which thrifty's policy shares. A
    subclass says only what a configuration is worth (`values`); the goodput table (cached per
    cluster), the integer program and the placement are the same for both."""

    adaptive = True
    heterogeneity_aware = True
    profiles_on_arrival = True  # every job is measured on one GPU of each kind on arrival
    fill_a_node = False  # see `GoodputTable`

    _table: GoodputTable | None = None

    @property
    def rows_built(self) -> int:
        """Goodput-table rows computed rather than served from the cache (for profiling)."""
        return self._table.builds if self._table is not None else 0

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        if not jobs:
            return {}
        self._table = GoodputTable.for_cluster(self._table, cluster, fill_a_node=self.fill_a_node)
        configs = self._table.configs
        values = self.values(jobs, cluster, self._table.rows(jobs), now)
        return place_configs(choose_configs(values, configs), jobs, configs, cluster)

    def values(
        self, jobs: Sequence[JobView], cluster: ClusterView, goodput: NDArray[np.float64],
        now: float,
    ) -> NDArray[np.float64]:
        """Worth of each job (row) on each configuration (column) given its goodput there;
        non-positive values are never chosen."""
        raise NotImplementedError

"""Pollux's genetic search over cluster allocations, and the nodes it searches over.

One round's problem (every job's scaled speed-up at every (nodes, replicas), the restart
factors, the replica limits) and the artifact's genetic operators on it; `thrifty.policy.pollux`
sets the problem up each round and reads the answer. The module docstring there says where each
operator comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from thrifty.errors import ThriftyError
from thrifty.policy.base import ClusterView, NodeView

_MAX_NODES_PER_JOB = 16  # the artifact's cap on the nodes one job may span
_SPEEDUP_OFFSET = 1e-3  # added inside the power mean: a job without GPUs scores 1000 at p = -1
_RESET_PROB = 0.1  # per job: back to its current allocation
_ZERO_ROW_PROB = 0.1  # per job: some of its entries are zeroed ...
_ZERO_ENTRY_PROB = 0.1  # ... each with this probability
_CROSSOVER_PROB = 0.9  # pymoo's default for a crossover operator
# Sia's tie-break between kinds holding equal shares of a job: keep the faster GPUs.
_KIND_PREFERENCE = ("dgx-ext", "rtx", "aws")

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Layout:
    """The nodes the search places replicas on ("GA nodes"), and how they map to real nodes."""

    real: tuple[NodeView, ...]
    capacity: IntArray  # GPUs per GA node
    owner: IntArray  # index into `real` of each GA node
    node_kind: IntArray  # index into `kinds` of each GA node
    kinds: tuple[str, ...]
    kind_rank: IntArray  # tie-break preference per kind (higher wins)
    reference_kind: str  # the kind whose model stands for every GPU
    replica_cap: int  # most GPUs any one job may be given
    total_gpus: int

    @property
    def size(self) -> int:
        return len(self.capacity)

    @property
    def mixed(self) -> bool:
        return len(self.kinds) > 1

    @property
    def max_nodes(self) -> int:
        return min(_MAX_NODES_PER_JOB, self.size)


def layout_of(cluster: ClusterView) -> Layout:
    """Real nodes on a one-kind cluster; on a mixed one, equal virtual nodes as in Sia's
    evaluation of Pollux, so the search sees the homogeneous cluster Pollux was built for."""
    nodes = tuple(n for n in cluster.nodes if n.num_gpus > 0)
    if not nodes:
        raise ThriftyError("pollux needs a cluster with at least one GPU")
    kinds = tuple(sorted({n.gpu_kind for n in nodes}))
    total = sum(n.num_gpus for n in nodes)
    per_kind = {k: sum(n.num_gpus for n in nodes if n.gpu_kind == k) for k in kinds}
    first_seen = {k: min(i for i, n in enumerate(nodes) if n.gpu_kind == k) for k in kinds}
    reference = max(kinds, key=lambda k: (per_kind[k], -first_seen[k]))
    unit = math.gcd(*(n.num_gpus for n in nodes)) if len(kinds) > 1 else 0
    capacity: list[int] = []
    owner: list[int] = []
    for i, node in enumerate(nodes):
        parts = node.num_gpus // unit if unit else 1
        size = unit if unit else node.num_gpus
        capacity.extend([size] * parts)
        owner.extend([i] * parts)
    rank = [
        len(_KIND_PREFERENCE) - _KIND_PREFERENCE.index(k) if k in _KIND_PREFERENCE else 0
        for k in kinds
    ]
    kind_index = {k: i for i, k in enumerate(kinds)}
    return Layout(
        real=nodes,
        capacity=np.array(capacity, dtype=np.int64),
        owner=np.array(owner, dtype=np.int64),
        node_kind=np.array([kind_index[nodes[o].gpu_kind] for o in owner], dtype=np.int64),
        kinds=kinds,
        kind_rank=np.array(rank, dtype=np.int64),
        reference_kind=reference,
        replica_cap=min(per_kind.values()) if len(kinds) > 1 else total,
        total_gpus=total,
    )


def _uniform16(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.uint16]:
    """Uniform 16-bit integers, four per raw 64-bit draw: the GA's bulk randomness, cheaply."""
    size = math.prod(shape)
    raw = rng.bit_generator.random_raw((size + 3) // 4)
    return raw.view(np.uint16)[:size].reshape(shape)


_ONE = 1 << 16  # probabilities become thresholds on uniform 16-bit integers
_ORDERS = 64  # random node orders per round to trim jobs by


def _below(noise: NDArray[np.uint16], bound: int) -> IntArray:
    """Uniform integers in [0, bound) from uniform 16-bit noise (bound well below 2^16)."""
    return (noise.astype(np.int64) * bound) >> 16


class GeneticSearch:
    """One round's optimisation problem and the genetic operators on it.

    A population is an int16 array (jobs, GA nodes, individuals) of GPU counts, jobs in ranking
    order. Individuals run along the last, contiguous axis so that sums over jobs or nodes add
    whole slabs, which numpy does far faster than short reductions along the last axis.
    """

    def __init__(
        self,
        layout: Layout,
        base: IntArray,
        speedup: FloatArray,
        factor: FloatArray,
        max_replicas: IntArray,
        min_replicas: IntArray,
        p: float,
        rng: np.random.Generator,
    ):
        self.layout = layout
        self.jobs, self.nodes = base.shape
        self.base = base.astype(np.int16)[:, :, None]
        self.speedup = speedup  # (jobs, nodes + 1, replicas + 1), scaled
        self.factor = factor[:, None]
        self.max_replicas = max_replicas[:, None]
        self.min_replicas = min_replicas[:, None]
        self.p = p
        self.rng = rng
        self.capacity = layout.capacity.astype(np.int16)[:, None]  # (nodes, 1)
        self._room = self.capacity + 1
        self._job_index = np.arange(self.jobs)[:, None]
        self._hash = rng.random(self.jobs * self.nodes)
        # Node orders for trimming: each trimmed job draws one of these random permutations.
        self._orders = np.argsort(rng.random((_ORDERS, self.nodes)), axis=1)
        if layout.mixed:
            kinds = len(layout.kinds)
            self._kind_nodes = [np.flatnonzero(layout.node_kind == k) for k in range(kinds)]
            self._kind_rank = layout.kind_rank[:, None, None]

    # --- objective ------------------------------------------------------------------------
    def evaluate(
        self, states: NDArray[np.int16], nodes: IntArray, replicas: IntArray
    ) -> FloatArray:
        """Power mean of the scaled, restart-discounted speedups of every individual."""
        speedup = self.speedup[self._job_index, nodes, replicas]
        changed = (states != self.base).any(axis=1)
        speedup = np.where(changed, speedup * self.factor, speedup)
        if self.p == 0:
            return np.exp(np.log(np.maximum(speedup, _SPEEDUP_OFFSET)).mean(axis=0))
        if self.p == -1:
            return 1.0 / np.mean(1.0 / (speedup + _SPEEDUP_OFFSET), axis=0)
        return np.mean((speedup + _SPEEDUP_OFFSET) ** self.p, axis=0) ** (1.0 / self.p)

    # --- feasibility ----------------------------------------------------------------------
    def repair(
        self, states: NDArray[np.int16], noise: NDArray[np.uint16]
    ) -> tuple[NDArray[np.int16], IntArray, IntArray]:
        """Make every individual feasible, dropping GPUs only (never adding); also returns the
        nodes and replicas of every job in every individual. `noise`: (jobs, individuals)."""
        if self.layout.mixed:
            states = self._one_kind(states)
        states = self._trim(states, noise)
        return self._fit(states)

    def _one_kind(self, states: NDArray[np.int16]) -> NDArray[np.int16]:
        """Keep each job's GPUs of the kind holding most of them (Sia's repair)."""
        counts = np.stack([states[:, idx].sum(axis=1) for idx in self._kind_nodes])
        score = counts * (len(self._kind_nodes) + 1) + self._kind_rank
        keep = np.argmax(score, axis=0)  # (jobs, individuals)
        same = self.layout.node_kind[None, :, None] == keep[:, None, :]
        return states * same

    def _trim(self, states: NDArray[np.int16], noise: NDArray[np.uint16]) -> NDArray[np.int16]:
        """Cap each job's replicas and nodes, dropping GPUs from nodes in a random order."""
        replicas = states.sum(axis=1)
        over = replicas > self.max_replicas
        if self.nodes > self.layout.max_nodes:
            over |= (states > 0).sum(axis=1) > self.layout.max_nodes
        if not over.any():
            return states
        job, ind = np.nonzero(over)
        rows = states[job, :, ind]  # (rows, nodes)
        order = self._orders[noise[job, ind] % _ORDERS]
        line = np.arange(len(job))[:, None]
        shuffled = rows[line, order]
        kept = np.minimum(np.cumsum(shuffled, axis=1), self.max_replicas[job])
        shuffled = np.diff(kept, axis=1, prepend=0)
        if self.nodes > self.layout.max_nodes:
            shuffled *= np.cumsum(shuffled > 0, axis=1) <= self.layout.max_nodes
        trimmed = np.empty_like(rows)
        trimmed[line, order] = shuffled
        states = states.copy()
        states[job, :, ind] = trimmed
        return states

    def _fit(self, states: NDArray[np.int16]) -> tuple[NDArray[np.int16], IntArray, IntArray]:
        """Interference avoidance, then node capacities, jobs in ranking order (earlier wins)."""
        spread = (states > 0).sum(axis=1) > 1  # (jobs, individuals): multi-node jobs
        if spread.any():
            # A multi-node job loses every node an earlier multi-node job is on.
            multi = (states > 0) & spread[:, None, :]
            held = np.empty_like(multi)
            held[0] = multi[0]
            for j in range(1, self.jobs):
                np.logical_or(held[j - 1], multi[j], out=held[j])
            states = states.copy()
            states[1:] *= ~(multi[1:] & held[:-1])
        # Capacities: running totals over jobs, clipped at each node's size, differenced.
        total = np.empty_like(states)
        total[0] = states[0]
        for j in range(1, self.jobs):
            np.add(total[j - 1], states[j], out=total[j])
        np.minimum(total, self.capacity, out=total)
        out = np.diff(total, axis=0, prepend=np.zeros((1, *states.shape[1:]), states.dtype))
        replicas = out.sum(axis=1)
        if self.min_replicas.any():
            short = replicas < self.min_replicas
            out *= ~short[:, None, :]
            replicas = np.where(short, 0, replicas)
        nodes = (out > 0).sum(axis=1)
        return out, nodes, replicas

    # --- variation ------------------------------------------------------------------------
    def mutate(
        self, states: NDArray[np.int16], rows: NDArray[np.uint16], entries: NDArray[np.uint16]
    ) -> NDArray[np.int16]:
        """The artifact's three mutations: reset a job, zero some entries, raise some entries.

        `rows` (2, jobs, individuals) and `entries` (3, jobs, nodes, individuals) are uniform
        16-bit noise."""
        reset = rows[0] < _RESET_PROB * _ONE
        states = np.where(reset[:, None, :], self.base, states)
        keep = (rows[1] >= _ZERO_ROW_PROB * _ONE)[:, None, :] | (
            entries[0] >= _ZERO_ENTRY_PROB * _ONE
        )
        states = states * keep
        # Raise: about one node with free GPUs, and one of the job's own such nodes, per job,
        # each to a uniform count between its current one and the node's size.
        free = self.capacity - states.sum(axis=0)  # (nodes, individuals)
        open_nodes = free > 0
        any_open = open_nodes * np.float32(1.0) / np.maximum(open_nodes.sum(axis=0), 1)
        own = (states > 0) & open_nodes
        own_share = (_ONE / np.maximum(own.sum(axis=1), 1)).astype(np.float32)
        chance = own * (own_share[:, None, :] * (1 - any_open)) + any_open * _ONE
        hit = entries[1] < chance
        step = ((entries[2] >> 8).view(np.int16) * (self._room - states)) >> 8
        return states + step * hit

    def crossover(
        self,
        states: NDArray[np.int16],
        first: IntArray,
        second: IntArray,
        noise: NDArray[np.uint16],
    ) -> NDArray[np.int16]:
        """Single-point crossover over jobs: children swap the parents' first k jobs.

        `noise` (2, matings) picks the crossover point and whether to cross at all."""
        points = _below(noise[0], self.jobs)
        swap = np.arange(self.jobs)[:, None] < points[None, :]
        swap &= noise[1] < _CROSSOVER_PROB * _ONE
        swap = np.concatenate([swap, swap], axis=1)[:, None, :]
        own = states[:, :, np.concatenate([first, second])]
        other = states[:, :, np.concatenate([second, first])]
        return np.where(swap, other, own)

    # --- selection ------------------------------------------------------------------------
    def tournament(self, fitness: FloatArray, noise: NDArray[np.uint16]) -> IntArray:
        """Binary tournaments: the fitter of two random individuals, per column of `noise`."""
        a, b = _below(noise, len(fitness))
        return np.where(fitness[a] >= fitness[b], a, b)

    def survive(
        self, states: NDArray[np.int16], fitness: FloatArray, size: int
    ) -> tuple[NDArray[np.int16], FloatArray]:
        """The best `size` distinct individuals, best first."""
        order = np.argsort(-fitness, kind="stable")
        keys = self._hash @ states.reshape(-1, states.shape[2])
        _, first = np.unique(keys[order], return_index=True)
        keep = order[np.sort(first)][:size]
        return states[:, :, keep], fitness[keep]

    def run(self, initial: IntArray, population: int, generations: int) -> IntArray:
        """Evolve from `initial` (individuals, jobs, nodes); the final population, best first,
        in the same layout."""
        states = np.ascontiguousarray(initial.transpose(1, 2, 0), dtype=np.int16)
        noise = _uniform16(self.rng, (self.jobs, states.shape[2]))
        states, nodes, replicas = self.repair(states, noise)
        fitness = self.evaluate(states, nodes, replicas)
        states, fitness = self.survive(states, fitness, population)
        matings = max(1, (population + 1) // 2)
        children = 2 * matings
        jobs_size = self.jobs * children
        entries_size = jobs_size * self.nodes
        for _ in range(generations):
            # One draw of noise per generation, sliced for each operator.
            noise = _uniform16(self.rng, (6 * matings + 3 * jobs_size + 3 * entries_size,))
            cut = np.cumsum([2 * children, 2 * matings, 2 * jobs_size, jobs_size])
            parents = self.tournament(fitness, noise[: cut[0]].reshape(2, children))
            offspring = self.crossover(
                states,
                parents[:matings],
                parents[matings:],
                noise[cut[0] : cut[1]].reshape(2, matings),
            )
            offspring = self.mutate(
                offspring,
                noise[cut[1] : cut[2]].reshape(2, self.jobs, children),
                noise[cut[3] :].reshape(3, self.jobs, self.nodes, children),
            )
            offspring, nodes, replicas = self.repair(
                offspring, noise[cut[2] : cut[3]].reshape(self.jobs, children)
            )
            states, fitness = self.survive(
                np.concatenate([states, offspring], axis=2),
                np.concatenate([fitness, self.evaluate(offspring, nodes, replicas)]),
                population,
            )
        return states.transpose(2, 0, 1).astype(np.int64)

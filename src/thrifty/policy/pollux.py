"""Pollux: goodput-driven co-adaptive scheduling (Qiao et al., "Pollux: Co-adaptive Cluster
Scheduling for Goodput-Optimized Deep Learning", OSDI 2021).

Every round Pollux searches the space of cluster allocations (a jobs × nodes matrix of GPU counts)
with a genetic algorithm and keeps the allocation whose *fitness* is highest. A job's *speedup* at
an allocation is its best goodput there (batch size and accumulation re-optimised by its own
`GoodputModel`) divided by its best goodput at a fair share of the cluster; fitness is the power
mean of all speedups, `(mean((s + 1e-3)^p))^(1/p)`, with p = −1 by default, so a job left without
GPUs costs far more than a large job gains from a few more. A job whose allocation would change has
its speedup scaled by `max(age − restarts·δ, 0) / (age + δ)`, which keeps young and
often-restarted jobs where they are unless moving them pays clearly.

What comes from the paper, and what from the artifact that produced its simulated results
(`petuum/adaptdl`, `simulator/pollux.py`), which settles what the paper leaves open:

- Paper: speedup relative to a fair share, the power-mean fitness with p = −1, the restart factor
  with δ = 30 s, interference avoidance (at most one multi-node job on any node), jobs growing to
  at most twice the replicas they have run with (the caller fills `JobView.max_replicas` so), and
  a genetic search warm-started from the previous round and the current allocation.
- Artifact: the fair share is ⌈GPUs / jobs⌉ replicas on ⌈nodes / GPUs⌉ nodes (one node on a
  cluster of multi-GPU nodes); a job that has not run yet has speedup `replicas / fair replicas`;
  speedups are multiplied by `nodes / GPUs` ("dominant share × nodes") and 1e-3 is added inside
  the power mean; δ is a flat 30 s whatever the job's real restart cost. Jobs are ranked by
  (attained GPU-seconds, submit time), and a job earlier in that order wins contested GPUs in the
  repair. The GA keeps 100 individuals for 100 generations. Mutation resets a job to its current
  allocation (probability 0.1 per job), zeroes a job's entries (0.1 per job, then 0.1 per entry)
  and raises entries to a uniform count up to the node's size, on about one node with free GPUs
  and one of the job's own such nodes per job. Crossover swaps the first k jobs of two parents
  (probability 0.9, pymoo's default). Repair enforces, in this order, interference avoidance (a
  multi-node job loses every node an earlier multi-node job is on), each job's replica limit and
  at most 16 nodes per job (dropping GPUs from nodes in a random order), then node capacities in
  ranking order.
- Departures, none of which changes what is optimised: the artifact ran pymoo's NSGA-II with a
  second objective, cluster utility, that only steers its autoscaler, and returned the
  best-fitness solution; here a single-objective elitist GA (binary tournaments, the best distinct
  individuals survive) is warm-started from its whole final population rather than NSGA-II's
  Pareto set. The artifact's interference mask also strips single-node jobs ranked after two
  multi-node jobs on a shared node; here only multi-node jobs lose nodes. Trimming draws each
  job's node order from 64 random permutations per round instead of a fresh shuffle per job, and
  probabilities are thresholds on 16-bit random integers: both keep a round fast. When a fair
  share exceeds the replicas a job's largest batch can feed, its goodput is taken at the smallest
  per-GPU batch, which is what the artifact's batch optimiser returns there.

Heterogeneous clusters. Pollux has no notion of GPU kinds; on a cluster with several kinds it runs
heterogeneity-unaware, as Sia's evaluation ran it (SOSP'23 artifact, `sia-simulator/
cluster_unaware.py`, `multi_simulator_unaware.py`): every node is cut into virtual nodes of the
greatest common divisor of the node sizes (4 GPUs on the 4- and 8-GPU mixed cluster) and the GA
places replicas on those; the speedup model treats every GPU alike (each job's model for one
reference kind: the kind with the most GPUs, the first such in node order); and no job gets more
replicas than the smallest kind holds (Sia's `max_num_replicas`, 16 there). Sia then kept, for each
job, only the GPUs of the kind holding most of its allocation (ties to the faster kind: dgx-ext,
then rtx, then aws) and left the rest idle. Here the same rule is the first step of the repair,
inside the search, so every allocation the GA scores is one the cluster can run and GPUs it drops
stay available to other jobs. A job's virtual nodes are merged back into real nodes on output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from thrifty.errors import ThriftyError
from thrifty.goodput import GoodputModel
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView, NodeView

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
class _Layout:
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


def _layout(cluster: ClusterView) -> _Layout:
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
    return _Layout(
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


@dataclass
class _GoodputTable:
    """Best goodput of one job for every (nodes, replicas) the search may ask about.

    Rebuilt only when the job reports a new model (the simulator and the live scheduler hand over
    the same object until it changes), and extended to more replicas as the job's limit grows.
    """

    model: GoodputModel
    kind: str
    max_nodes: int
    values: FloatArray  # (max_nodes + 1, replicas + 1); 0 where impossible
    bases: dict[tuple[int, int], float] = field(default_factory=dict)

    @classmethod
    def build(cls, model: GoodputModel, kind: str, max_nodes: int) -> _GoodputTable:
        return cls(model, kind, max_nodes, np.zeros((max_nodes + 1, 1)))

    def ensure(self, replicas: int) -> None:
        """Fill in placements up to `replicas` GPUs (only the new columns are computed)."""
        have = self.values.shape[1] - 1
        if replicas <= have:
            return
        reps = np.arange(have + 1, replicas + 1)
        nodes = np.arange(1, self.max_nodes + 1)
        grid_r, grid_n = np.meshgrid(reps, nodes)
        valid = grid_n <= grid_r
        goodput, _, _ = self.model.best(self.kind, grid_n[valid], grid_r[valid])
        extra = np.zeros((self.max_nodes + 1, len(reps)))
        extra[1:][valid] = goodput
        self.values = np.concatenate([self.values, extra], axis=1)

    def base(self, nodes: int, replicas: int) -> float:
        """Best goodput at the fair share, the denominator of every speedup of this job."""
        key = (nodes, replicas)
        if key not in self.bases:
            value = float(self.model.best(self.kind, nodes, replicas)[0])
            if value <= 0:
                # More replicas than the largest batch can feed: the smallest per-GPU batch,
                # beyond the batch limit, as the reference optimiser would evaluate it.
                lim = self.model.limits
                value = float(self.model.goodput(self.kind, nodes, replicas, lim.min_local_bsz))
            if not value > 0:
                positive = self.values[self.values > 0]
                value = float(positive.max()) if positive.size else 1.0
            self.bases[key] = value
        return self.bases[key]


def _model_kind(model: GoodputModel, preferred: str) -> str:
    """The kind whose throughput model stands for every GPU: the reference kind where the job
    has one (always, for a simulated unaware job), else the first it has."""
    if preferred in model.throughput:
        return preferred
    return sorted(model.throughput)[0]


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


class _Search:
    """One round's optimisation problem and the genetic operators on it.

    A population is an int16 array (jobs, GA nodes, individuals) of GPU counts, jobs in ranking
    order. Individuals run along the last, contiguous axis so that sums over jobs or nodes add
    whole slabs, which numpy does far faster than short reductions along the last axis.
    """

    def __init__(
        self,
        layout: _Layout,
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


class PolluxPolicy(BasePolicy):
    """Pollux's scheduling policy; see the module docstring for its source and choices.

    Parameters:
        seed: seeds the one random generator the search draws from; equal seeds and inputs give
            equal allocations.
        p: exponent of the power mean over job speedups (−1: the paper's default; more negative is
            fairer, 1 maximises average speedup, 0 is the geometric mean).
        restart_penalty: δ in seconds of the restart factor `max(age − restarts·δ, 0)/(age + δ)`
            applied to a job whose allocation would change (30 s, as in the paper and artifact).
        population: individuals kept by the genetic search each generation (100).
        generations: generations of offspring per scheduling round (100).
    """

    name = "pollux"
    adaptive = True

    def __init__(
        self,
        seed: int = 0,
        p: float = -1.0,
        restart_penalty: float = 30.0,
        population: int = 100,
        generations: int = 100,
    ):
        if population < 1:
            raise ThriftyError(f"population must be at least 1, got {population}")
        if generations < 0:
            raise ThriftyError(f"generations must be non-negative, got {generations}")
        if restart_penalty < 0:
            raise ThriftyError(f"restart_penalty must be non-negative, got {restart_penalty}")
        if not np.isfinite(p):
            raise ThriftyError(f"p must be finite, got {p}")
        self.seed = seed
        self.p = float(p)
        self.restart_penalty = float(restart_penalty)
        self.population = population
        self.generations = generations
        self._rng = np.random.default_rng(seed)
        self._cluster: ClusterView | None = None
        self._layout: _Layout | None = None
        self._tables: dict[str, _GoodputTable] = {}
        self._previous: tuple[list[str], IntArray] | None = None
        self._rows: dict[str, IntArray] = {}  # each job's last GA-node row

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        """One scheduling round: search from the current allocation and last round's population,
        return the fittest allocation found."""
        layout = self._layout_for(cluster)
        if not jobs:
            self._previous = None
            self._rows = {}
            return {}
        order = sorted(jobs, key=lambda j: (j.attained_service, j.submit_time, j.id))
        ids = [j.id for j in order]
        active = set(ids)
        self._tables = {k: v for k, v in self._tables.items() if k in active}
        base = self._base_state(order, layout)
        max_replicas = np.array(
            [max(0, min(j.max_replicas, layout.replica_cap)) for j in order], dtype=np.int64
        )
        min_replicas = np.array([max(0, j.min_replicas) for j in order], dtype=np.int64)
        speedup = self._speedups(order, layout, max_replicas)
        age = np.array([j.age(now) for j in order])
        restarts = np.array([j.restarts for j in order], dtype=float)
        delta = self.restart_penalty
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.maximum(age - restarts * delta, 0.0) / (age + delta)
        factor = np.nan_to_num(factor, nan=1.0)  # δ = 0 and age 0: no penalty at all
        search = _Search(
            layout, base, speedup, factor, max_replicas, min_replicas, self.p, self._rng
        )
        initial = np.concatenate([base[None], self._warm_start(ids, layout)])
        final = search.run(initial, self.population, self.generations)
        self._previous = (ids, final)
        best = final[0]
        self._rows = {job_id: best[i].copy() for i, job_id in enumerate(ids)}
        return self._allocations(ids, best, layout)

    # --- round set-up ---------------------------------------------------------------------
    def _layout_for(self, cluster: ClusterView) -> _Layout:
        """The search's node layout, rebuilt (and all memory of past rounds dropped) only when
        the cluster itself changes."""
        if self._layout is None or (cluster is not self._cluster and cluster != self._cluster):
            self._layout = _layout(cluster)
            self._previous = None
            self._rows = {}
            self._tables = {}
        self._cluster = cluster
        return self._layout

    def _base_state(self, order: Sequence[JobView], layout: _Layout) -> IntArray:
        """Current allocations as a (jobs, GA nodes) matrix.

        With virtual nodes, a job's last row is reused when it still matches its real allocation;
        other jobs fill the remaining virtual capacity of their real nodes in order.
        """
        state = np.zeros((len(order), layout.size), dtype=np.int64)
        real_index = {n.name: i for i, n in enumerate(layout.real)}
        wanted: dict[int, np.ndarray] = {}
        for j, job in enumerate(order):
            if job.allocation is None:
                continue
            counts = np.zeros(len(layout.real), dtype=np.int64)
            for name, gpus in job.allocation.gpus.items():
                if name in real_index:
                    counts[real_index[name]] += gpus
            wanted[j] = counts
        if not layout.mixed:
            for j, counts in wanted.items():
                state[j] = counts[layout.owner]  # one GA node per real node, same order
            return state
        free = layout.capacity.copy()
        pending: list[int] = []
        for j, counts in wanted.items():
            row = self._rows.get(order[j].id)
            if (
                row is not None
                and row.shape == free.shape
                and np.array_equal(np.bincount(layout.owner, row, len(layout.real)), counts)
                and np.all(row <= free)
            ):
                state[j] = row
                free -= row
            else:
                pending.append(j)
        for j in pending:
            for real, gpus in enumerate(wanted[j]):
                for ga in np.flatnonzero(layout.owner == real):
                    take = min(int(gpus), int(free[ga]))
                    state[j, ga] += take
                    free[ga] -= take
                    gpus -= take
        return state

    def _speedups(
        self, order: Sequence[JobView], layout: _Layout, max_replicas: IntArray
    ) -> FloatArray:
        """Scaled speedup of every job at every (nodes, replicas) up to its limit."""
        jobs = len(order)
        fair_replicas = math.ceil(layout.total_gpus / jobs)
        fair_nodes = min(math.ceil(layout.size / layout.total_gpus), fair_replicas)
        max_nodes = layout.max_nodes
        width = int(max_replicas.max()) if jobs else 0
        speedup = np.zeros((jobs, max_nodes + 1, width + 1))
        ramp = np.arange(width + 1) / fair_replicas
        for j, job in enumerate(order):
            limit = int(max_replicas[j])
            model = job.model
            if model is None:
                speedup[j, 1:, : limit + 1] = ramp[: limit + 1]
                continue
            table = self._tables.get(job.id)
            kind = _model_kind(model, layout.reference_kind)
            if table is None or table.model is not model or table.max_nodes != max_nodes:
                table = _GoodputTable.build(model, kind, max_nodes)
                self._tables[job.id] = table
            table.ensure(limit)
            base = table.base(fair_nodes, fair_replicas)
            speedup[j, :, : limit + 1] = table.values[:, : limit + 1] / base
        return speedup * (layout.size / layout.total_gpus)

    def _warm_start(self, ids: list[str], layout: _Layout) -> IntArray:
        """Last round's final population, re-indexed to this round's jobs (new jobs get none)."""
        if self._previous is None:
            return np.zeros((0, len(ids), layout.size), dtype=np.int64)
        prev_ids, prev_states = self._previous
        where = {job_id: i for i, job_id in enumerate(prev_ids)}
        dst = [i for i, job_id in enumerate(ids) if job_id in where]
        src = [where[ids[i]] for i in dst]
        states = np.zeros((len(prev_states), len(ids), layout.size), dtype=np.int64)
        states[:, dst] = prev_states[:, src]
        return states

    def _allocations(
        self, ids: list[str], best: IntArray, layout: _Layout
    ) -> dict[str, Allocation]:
        """The winning matrix as allocations on real nodes; jobs left without GPUs are omitted."""
        result: dict[str, Allocation] = {}
        for job_id, row in zip(ids, best, strict=True):
            if not row.any():
                continue
            per_real = np.bincount(layout.owner, row, len(layout.real)).astype(np.int64)
            used = np.flatnonzero(per_real)
            kinds = {layout.real[i].gpu_kind for i in used}
            if len(kinds) != 1:  # the repair forbids this; fail loudly rather than mis-place
                raise ThriftyError(f"pollux produced a mixed-kind allocation for '{job_id}'")
            result[job_id] = Allocation(
                {layout.real[i].name: int(per_real[i]) for i in used}, kinds.pop()
            )
        return result

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

import numpy as np

from thrifty.errors import ThriftyError
from thrifty.goodput import GoodputGrid, GoodputModel
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.pollux_search import FloatArray, GeneticSearch, IntArray, Layout, layout_of


def _model_kind(model: GoodputModel, preferred: str) -> str:
    """The kind whose throughput model stands for every GPU: the reference kind where the job
    has one (always, for a simulated unaware job), else the first it has."""
    if preferred in model.throughput:
        return preferred
    return sorted(model.throughput)[0]


class PolluxPolicy(BasePolicy):
    """Pollux's scheduling policy; see the module docstring for its source and choices.

    Parameters:
        seed: seeds the one random generator the search draws from; equal seeds and inputs give
            equal allocations.
        p: exponent of the power mean over job speedups (−1: the paper's default; more negative is
            fairer, 1 maximises average speedup, 0 is the geometric mean).
        restart_penalty_s: δ in seconds of the restart factor `max(age − restarts·δ, 0)/(age + δ)`
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
        restart_penalty_s: float = 30.0,
        population: int = 100,
        generations: int = 100,
    ):
        if population < 1:
            raise ThriftyError(f"population must be at least 1, got {population}")
        if generations < 0:
            raise ThriftyError(f"generations must be non-negative, got {generations}")
        if restart_penalty_s < 0:
            raise ThriftyError(f"restart_penalty_s must be non-negative, got {restart_penalty_s}")
        if not np.isfinite(p):
            raise ThriftyError(f"p must be finite, got {p}")
        self.seed = seed
        self.p = float(p)
        self.restart_penalty_s = float(restart_penalty_s)
        self.population = population
        self.generations = generations
        self._rng = np.random.default_rng(seed)
        self._cluster: ClusterView | None = None
        self._layout: Layout | None = None
        self._tables: dict[str, GoodputGrid] = {}
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
        delta = self.restart_penalty_s
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.maximum(age - restarts * delta, 0.0) / (age + delta)
        factor = np.nan_to_num(factor, nan=1.0)  # δ = 0 and age 0: no penalty at all
        search = GeneticSearch(
            layout, base, speedup, factor, max_replicas, min_replicas, self.p, self._rng
        )
        initial = np.concatenate([base[None], self._warm_start(ids, layout)])
        final = search.run(initial, self.population, self.generations)
        self._previous = (ids, final)
        best = final[0]
        self._rows = {job_id: best[i].copy() for i, job_id in enumerate(ids)}
        return self._allocations(ids, best, layout)

    # --- round set-up ---------------------------------------------------------------------
    def _layout_for(self, cluster: ClusterView) -> Layout:
        """The search's node layout, rebuilt (and all memory of past rounds dropped) only when
        the cluster itself changes."""
        if self._layout is None or (cluster is not self._cluster and cluster != self._cluster):
            self._layout = layout_of(cluster)
            self._previous = None
            self._rows = {}
            self._tables = {}
        self._cluster = cluster
        return self._layout

    def _base_state(self, order: Sequence[JobView], layout: Layout) -> IntArray:
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
        self, order: Sequence[JobView], layout: Layout, max_replicas: IntArray
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
            if table is None or not table.fits(model, kind, max_nodes):
                table = GoodputGrid.build(model, kind, max_nodes)
                self._tables[job.id] = table
            speedup[j, :, : limit + 1] = table.speedups(limit, fair_nodes, fair_replicas)
        return speedup * (layout.size / layout.total_gpus)

    def _warm_start(self, ids: list[str], layout: Layout) -> IntArray:
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
        self, ids: list[str], best: IntArray, layout: Layout
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

"""Optimus with oracle knowledge: GPUs go where they shorten remaining training time the most.

Source: Peng et al., "Optimus: An Efficient Dynamic Resource Scheduler for Deep Learning
Clusters", EuroSys 2018. Optimus fits, online, a model of each job's convergence (how many steps
remain) and of its speed on a given number of workers, then hands out resources greedily: every job
first gets a minimal share, after which each further unit goes to the job whose estimated remaining
time drops the most with it. Jobs keep their own batch size; Optimus only decides how many workers
train it.

The Pollux paper (OSDI'21) compares against "Optimus+Oracle": Optimus's allocation rule fed with
true knowledge instead of its online estimates, so that it is judged on its allocation rule alone.
As its artifact ran it, and as this class does:

- remaining work is the optimizer steps left at the job's requested total batch, read from the
  measured training runs (`oracle.remaining_steps`);
- a job's step time on r GPUs is the true, profiled one with the requested batch split over the r
  GPUs (accumulating when a GPU's share does not fit), packed onto as few nodes as possible;
- every active job first gets one GPU while any are free, in submission order; then GPUs are
  added one at a time to the job with the largest marginal gain
  `(step_time(r) − step_time(r + 1)) × remaining_steps` until no GPU is left or no job gains;
- a job may use at most `requested_batch // min per-GPU batch` GPUs; jobs of the applications in
  `single_replica` use one (ncf, as the artifact ran it: its step time barely depends on the batch);
- a job whose GPU count is unchanged keeps its placement; the others are placed in increasing GPU
  count on the nodes with the most free GPUs. The owner's requested GPU count is ignored.

The policy reads only `JobView.oracle` (`needs_oracle`): the simulator's is the measured truth,
a live scheduler's is `ModelOracle` over the job's reported model, so step times come from the
fitted throughput model and remaining work from the job's declared length. A job whose length is
unknown counts as much remaining work as any other (one unit), and a job without an oracle keeps
one GPU.

Parameters: `single_replica`, applications held to one GPU. `seed` is accepted for a uniform
constructor; the policy is deterministic and uses no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.placement import free_gpus, most_free, packed_shape, take


class OptimusPolicy(BasePolicy):
    name = "optimus"
    needs_oracle = True

    def __init__(self, seed: int = 0, single_replica: frozenset[str] = frozenset({"ncf"})):
        self.seed = seed
        self.single_replica = frozenset(single_replica)
        # Oracle answers are kept across rounds, per job, for as long as its oracle is the same
        # (compared by value: a live job's changes when it reports a new model).
        self._oracle_steps: dict[str, tuple[object, dict[tuple[str, int, int], float]]] = {}

    # --- what a job is worth -------------------------------------------------------------
    @staticmethod
    def batch_size(job: JobView) -> int:
        """The total batch the job trains at: its owner's request, else its initial batch."""
        if job.requested_batch_size:
            return int(job.requested_batch_size)
        return job.limits.init_batch_size if job.limits else 1

    def max_replicas(self, job: JobView, cluster: ClusterView) -> int:
        """Most GPUs the job may get: every GPU must receive at least the minimum per-GPU batch."""
        if job.application in self.single_replica:
            return 1
        least = job.limits.min_local_bsz if job.limits else 1
        return max(1, min(self.batch_size(job) // least, cluster.num_gpus))

    @staticmethod
    def remaining_steps(job: JobView, batch: int) -> float:
        """Steps left at `batch`, from the oracle; one unit when it cannot tell."""
        steps = job.oracle.remaining_steps(batch) if job.oracle is not None else None
        return 1.0 if steps is None else float(steps)

    @staticmethod
    def _kind(job: JobView, cluster: ClusterView) -> str:
        """GPU kind the job's speed is predicted on: where it runs, else the most common kind."""
        if job.allocation is not None:
            return job.allocation.kind
        return max(cluster.kinds, key=cluster.gpus_of)

    def step_seconds(self, job: JobView, replicas: int, cluster: ClusterView) -> float:
        """Seconds per optimizer step on `replicas` GPUs packed onto the fewest nodes (inf if the
        job cannot train there or its speed is unknown)."""
        kind = self._kind(job, cluster)
        shape = packed_shape(cluster, kind, replicas)
        if sum(shape) < replicas:
            return math.inf
        if job.oracle is None:
            return math.inf
        batch = self.batch_size(job)
        cached = self._oracle_steps.get(job.id)
        if cached is None or (cached[0] is not job.oracle and cached[0] != job.oracle):
            cached = self._oracle_steps[job.id] = (job.oracle, {})
        known = cached[1]
        key = (kind, replicas, batch)
        if key not in known:
            seconds = job.oracle.step_seconds(kind, shape, batch)
            known[key] = math.inf if seconds is None else float(seconds)
        return known[key]

    # --- the allocation rule -------------------------------------------------------------
    def replica_counts(self, jobs: Sequence[JobView], cluster: ClusterView) -> dict[str, int]:
        """GPUs per job: one each in submission order, then greedily by marginal gain."""
        ordered = sorted(jobs, key=lambda j: j.submit_time)  # stable: input order breaks ties
        self._oracle_steps = {
            j.id: self._oracle_steps[j.id] for j in ordered if j.id in self._oracle_steps
        }
        step_cache: dict[tuple[str, int], float] = {}

        def step(job: JobView, replicas: int) -> float:
            key = (job.id, replicas)
            if key not in step_cache:
                step_cache[key] = self.step_seconds(job, replicas, cluster)
            return step_cache[key]

        remaining = {j.id: self.remaining_steps(j, self.batch_size(j)) for j in ordered}
        limit = {j.id: self.max_replicas(j, cluster) for j in ordered}

        def gain(job: JobView, replicas: int) -> float:
            if replicas + 1 > limit[job.id]:
                return 0.0
            now, more = step(job, replicas), step(job, replicas + 1)
            if math.isinf(more):
                return 0.0
            return (now - more) * remaining[job.id]  # inf when only more GPUs make it run

        free = cluster.num_gpus
        counts: dict[str, int] = {}
        for job in ordered:
            counts[job.id] = 1 if free >= 1 else 0
            free -= counts[job.id]
        gains = {j.id: gain(j, 1) if counts[j.id] and free > 0 else 0.0 for j in ordered}
        by_id = {j.id: j for j in ordered}
        while free > 0 and gains:
            best = max(gains, key=lambda k: gains[k])  # first in submission order on ties
            if not gains[best] > 0:
                break
            counts[best] += 1
            free -= 1
            gains[best] = gain(by_id[best], counts[best])
        return counts

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        counts = self.replica_counts(jobs, cluster)
        order = {j.id: i for i, j in enumerate(sorted(jobs, key=lambda j: j.submit_time))}
        # Unchanged GPU counts keep their placement: no restart for a job Optimus left alone.
        result: dict[str, Allocation] = {
            j.id: j.allocation
            for j in jobs
            if j.allocation is not None and j.allocation.num_replicas == counts[j.id]
        }
        free = free_gpus(cluster, result.values())
        for job in sorted(jobs, key=lambda j: (counts[j.id], order[j.id])):
            want = counts[job.id]
            if want == 0 or job.id in result:
                continue
            alloc = self._place(want, free, cluster, self._kind(job, cluster))
            if alloc is not None:
                take(free, alloc)
                result[job.id] = alloc
        return result

    @staticmethod
    def _place(
        want: int, free: dict[str, int], cluster: ClusterView, kind: str
    ) -> Allocation | None:
        """`want` GPUs on the most-free nodes of `kind`; on a cluster of several kinds, another
        kind or, failing that, as many GPUs as one kind still has free (the counts were decided
        over the whole cluster, but a job's GPUs must all be of one kind)."""
        alloc = most_free(want, free, cluster, kind)
        if alloc is not None:
            return alloc
        spare = {k: sum(free[n.name] for n in cluster.nodes_of(k)) for k in cluster.kinds}
        best = max(cluster.kinds, key=lambda k: spare[k])
        return most_free(min(want, spare[best]), free, cluster, best)

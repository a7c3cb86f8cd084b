"""Tiresias: least attained service first, with discretised priority queues.

Source: Gu et al., "Tiresias: A GPU Cluster Manager for Distributed Deep Learning", NSDI 2019.
Without knowing how long a job will run, Tiresias favours jobs that have received little service
so far, measuring service in two dimensions (time × GPUs, "2D-LAS"). To avoid the constant
preemptions of continuous LAS it discretises priorities into a few queues: a job starts in the
highest-priority queue and is demoted once its attained service crosses that queue's threshold.
Within a queue jobs run first-come, first-served, by the time they entered the queue.

The paper also promotes jobs that have starved for long (a knob it calls STARVELIMIT) and places
jobs with a consolidation preference learnt per model. The Pollux artifact, against which this
module is checked, ran Tiresias as follows, and so does this class:

- two queues, demotion after 16 GPU-hours of attained service (executed time × requested GPUs);
- starvation handling off, so no job is ever promoted back;
- every job runs with exactly the GPUs its owner asked for, at its owner's batch size;
- jobs are admitted in priority order while their GPU count fits in what is left of the cluster;
  one that does not fit is skipped rather than blocking those behind it;
- running jobs keep their placement; newly admitted ones take GPUs from the nodes with the most
  free GPUs; a running job that is no longer admitted is preempted (it restarts from its
  checkpoint when it is admitted again).

Parameters: `queue_thresholds`, attained service in GPU-seconds at which a job leaves each queue
(N thresholds give N + 1 queues; default one threshold of 16 GPU-hours). `seed` is accepted for a
uniform constructor; the policy is deterministic and uses no randomness.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.placement import free_gpus, most_free, take


@dataclass
class _QueueEntry:
    level: int  # 0 is the highest priority
    order: int  # position of arrival into that queue: FIFO within a queue


class TiresiasPolicy(BasePolicy):
    name = "tiresias"

    def __init__(self, seed: int = 0, queue_thresholds: tuple[float, ...] = (16 * 3600.0,)):
        thresholds = tuple(float(t) for t in queue_thresholds)
        if any(t <= 0 for t in thresholds) or list(thresholds) != sorted(set(thresholds)):
            raise ThriftyError(
                f"queue_thresholds must be positive and strictly increasing (GPU-seconds), "
                f"got {queue_thresholds}"
            )
        self.seed = seed
        self.queue_thresholds = thresholds
        self._queues: dict[str, _QueueEntry] = {}
        self._arrivals = 0

    def queue_of(self, job_id: str) -> int | None:
        """The priority queue a job sits in (0 is the highest), or None if unknown."""
        entry = self._queues.get(job_id)
        return entry.level if entry else None

    def _enqueue(self, job_id: str, level: int) -> None:
        self._queues[job_id] = _QueueEntry(level, self._arrivals)
        self._arrivals += 1

    def _update_queues(self, jobs: Sequence[JobView]) -> None:
        """Forget finished jobs, admit new ones to the top queue and demote by attained service.

        Attained service only grows while a job runs, so checking every job each round demotes
        exactly the running ones that crossed a threshold since the last round."""
        active = {j.id for j in jobs}
        self._queues = {k: v for k, v in self._queues.items() if k in active}
        # Arrival order (stable for equal submit times) decides FIFO order among newcomers.
        for job in sorted(jobs, key=lambda j: j.submit_time):
            level = bisect.bisect_right(self.queue_thresholds, job.attained_service)
            entry = self._queues.get(job.id)
            if entry is None:
                self._enqueue(job.id, 0)
                entry = self._queues[job.id]
            if level > entry.level:
                self._enqueue(job.id, level)

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        self._update_queues(jobs)
        ranked = sorted(jobs, key=lambda j: (self._queues[j.id].level, self._queues[j.id].order))
        capacity = {kind: cluster.gpus_of(kind) for kind in cluster.kinds}
        largest = max(capacity.values(), default=0)

        # Admission by GPU count, in priority order; where each job ends up comes after.
        left = dict(capacity)
        admitted: list[tuple[JobView, int, str]] = []  # (job, GPUs, kind) in priority order
        result: dict[str, Allocation] = {}  # running jobs that keep their GPUs: no restart
        for job in ranked:
            want = min(job.requested_replicas or job.max_replicas, largest)
            if want <= 0:
                continue
            current = job.allocation
            if current is not None and current.num_replicas == want and left[current.kind] >= want:
                result[job.id] = current
                left[current.kind] -= want
                continue
            fits = [k for k in cluster.kinds if left[k] >= want]
            if fits:
                kind = max(fits, key=lambda k: left[k])  # the first such kind on ties
                left[kind] -= want
                admitted.append((job, want, kind))

        # Newly admitted (or resumed) jobs fill what the running ones leave free.
        free = free_gpus(cluster, result.values())
        for job, want, kind in admitted:
            alloc = most_free(want, free, cluster, kind)
            if alloc is None:  # cannot happen: admission counted these GPUs as free
                raise ThriftyError(f"tiresias could not place admitted job '{job.id}'")
            take(free, alloc)
            result[job.id] = alloc
        return result

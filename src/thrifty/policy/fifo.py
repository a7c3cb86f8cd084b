"""First-come, first-served with the owners' own requests: the baseline every cluster starts at.

Jobs start in submission order with exactly the GPUs and batch size their owners asked for, and
keep them until they finish. A job that does not fit blocks those behind it (strict FIFO, as a
plain batch queue behaves), so no large job starves.
"""

from __future__ import annotations

from collections.abc import Sequence

from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.placement import free_gpus, pack, take


class FifoPolicy(BasePolicy):
    name = "fifo"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        result = {j.id: j.allocation for j in jobs if j.allocation is not None}
        free = free_gpus(cluster, result.values())
        for job in sorted(jobs, key=lambda j: (j.submit_time, j.id)):
            if job.allocation is not None:
                continue
            want = min(job.requested_replicas or 1, cluster.num_gpus)
            alloc = pack(want, free, cluster)
            if alloc is None:
                break
            take(free, alloc)
            result[job.id] = alloc
        return result

"""Turning GPU counts into nodes: the placement logic every policy shares.

Packing a job onto as few nodes as possible keeps its gradient synchronisation inside a node
(much faster than across nodes), and taking the fullest-free nodes first leaves whole nodes for
the next large job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from thrifty.policy.base import Allocation, ClusterView


def free_gpus(cluster: ClusterView, allocations: Iterable[Allocation]) -> dict[str, int]:
    """GPUs still free on each node once `allocations` are in place."""
    free = {n.name: n.num_gpus for n in cluster.nodes}
    for alloc in allocations:
        for node, count in alloc.gpus.items():
            free[node] -= count
    return free


def pack(
    replicas: int,
    free: Mapping[str, int],
    cluster: ClusterView,
    kinds: Iterable[str] | None = None,
) -> Allocation | None:
    """`replicas` GPUs of one kind on the fewest nodes (fullest-free first), or None if no kind
    has that many free. Among kinds that fit, the one needing the fewest nodes wins, then the
    first in `kinds` order."""
    if replicas <= 0:
        return None
    best: tuple[int, int, Allocation] | None = None
    for rank, kind in enumerate(kinds if kinds is not None else cluster.kinds):
        nodes = sorted(
            (n for n in cluster.nodes if n.gpu_kind == kind and free.get(n.name, 0) > 0),
            key=lambda n: (-free[n.name], n.name),
        )
        if sum(free[n.name] for n in nodes) < replicas:
            continue
        # The smallest single node that fits the whole job keeps larger nodes whole.
        single = [n for n in nodes if free[n.name] >= replicas]
        if single:
            node = min(single, key=lambda n: (free[n.name], n.name))
            gpus = {node.name: replicas}
        else:
            gpus, left = {}, replicas
            for node in nodes:
                take = min(free[node.name], left)
                gpus[node.name] = take
                left -= take
                if left == 0:
                    break
        candidate = (len(gpus), rank, Allocation(gpus, kind))
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    return best[2] if best else None


def take(free: dict[str, int], alloc: Allocation) -> None:
    """Mark `alloc`'s GPUs as used in `free`."""
    for node, count in alloc.gpus.items():
        free[node] -= count


def most_free(
    replicas: int, free: Mapping[str, int], cluster: ClusterView, kind: str
) -> Allocation | None:
    """`replicas` GPUs of `kind` taken node by node from the nodes with the most free GPUs (ties in
    cluster order), or None if the kind has fewer free.

    This is how the rigid baselines of the Pollux artifact (Tiresias, Optimus) place a job. Unlike
    `pack` it does not look for the tightest single node, so a small job may land on an emptier
    node, or span nodes when the free GPUs are fragmented; reproducing those baselines faithfully
    needs that behaviour.
    """
    if replicas <= 0:
        return None
    order = {n.name: i for i, n in enumerate(cluster.nodes)}
    nodes = sorted(
        (n.name for n in cluster.nodes if n.gpu_kind == kind and free.get(n.name, 0) > 0),
        key=lambda name: (-free[name], order[name]),
    )
    if sum(free[name] for name in nodes) < replicas:
        return None
    gpus: dict[str, int] = {}
    left = replicas
    for name in nodes:
        count = min(free[name], left)
        gpus[name] = count
        left -= count
        if left == 0:
            break
    return Allocation(gpus, kind)


def packed_shape(cluster: ClusterView, kind: str, replicas: int) -> tuple[int, ...]:
    """GPUs per node if `replicas` GPUs of `kind` filled the largest nodes first: the placement a
    policy assumes when it predicts a job's speed before knowing where it will land."""
    shape: list[int] = []
    left = replicas
    for size in sorted((n.num_gpus for n in cluster.nodes if n.gpu_kind == kind), reverse=True):
        if left <= 0:
            break
        shape.append(min(size, left))
        left -= shape[-1]
    return tuple(shape)

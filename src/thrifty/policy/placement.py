"""Turning GPU counts into nodes: the placement logic every policy shares, as pure functions.

Packing a job onto as few nodes as possible keeps its gradient synchronisation inside a node
(much faster than across nodes), and taking the fullest-free nodes first leaves whole nodes for
the next large job. The rules here differ where the policy they reproduce placed jobs its own
way (the rigid baselines of the Pollux artifact, Gavel's GPU slots, Sia's configurations); each
says whose rule it is. Nothing here keeps state: a policy passes in what it remembers.

- `free_gpus`, `take`: the free GPUs per node, and drawing an allocation from them.
- `pack`: the fewest nodes, tightest single node first (FIFO, Gavel's throughput estimates).
- `most_free`: node by node from the emptiest (Tiresias and Optimus, as the Pollux artifact).
- `packed_shape`: the placement a policy assumes before it knows where a job will land.
- `place_counts`: GPU counts per job onto nodes, keeping unchanged jobs (Sia, thrifty).
- `place_slots`: GPU slots per job, previous slots kept when free (Gavel, as Sia ran it).
- `shrink`, `keep_fullest`: fewer GPUs of an existing allocation (quotas, budgets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, ClusterView

Worker = tuple[str, int]  # (node name, GPU slot on that node)


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


def place_counts(
    wants: Sequence[tuple[str, str, int, float]],
    keep: Mapping[str, Allocation],
    cluster: ClusterView,
) -> dict[str, Allocation]:
    """Nodes for every (job id, GPU kind, GPU count, submit time) in `wants`.

    A job in `keep` (its current allocation already has the wanted kind and shape) keeps its
    nodes when they are all still free: moving it would cost a restart. The rest are placed
    largest first (then by submit time and id): whole-node counts on empty nodes, smaller ones on
    the node that fits them most tightly, so Sia's power-of-two pieces fill nodes without gaps.
    Where kept jobs fragment a kind, a job is spread over its free GPUs (`pack`) rather than
    left waiting; a job that still does not fit is left out.
    """
    free = {n.name: n.num_gpus for n in cluster.nodes}
    kind_of = {n.name: n.gpu_kind for n in cluster.nodes}
    order = {n.name: i for i, n in enumerate(cluster.nodes)}
    result: dict[str, Allocation] = {}
    pending: list[tuple[str, str, int, float]] = []
    for want in wants:
        current = keep.get(want[0])
        if current is not None and all(free[node] >= n for node, n in current.gpus.items()):
            for node, n in current.gpus.items():
                free[node] -= n
            result[want[0]] = current
        else:
            pending.append(want)
    pending.sort(key=lambda w: (-w[2], w[3], w[0]))
    node_size: dict[str, int] = {}
    for job_id, kind, count, _ in pending:
        if kind not in node_size:
            node_size[kind] = max(n.num_gpus for n in cluster.nodes_of(kind))
        size = node_size[kind]
        candidates = [n for n, k in kind_of.items() if k == kind and free[n] > 0]
        empty = sorted((n for n in candidates if free[n] == size), key=order.__getitem__)
        fits = [n for n in candidates if free[n] >= count]
        if count >= size and len(empty) >= count // size:
            alloc: Allocation | None = Allocation({n: size for n in empty[: count // size]}, kind)
        elif count < size and fits:
            alloc = Allocation({min(fits, key=lambda n: (free[n], order[n])): count}, kind)
        else:
            alloc = pack(count, free, cluster, [kind])
        if alloc is not None:
            take(free, alloc)
            result[job_id] = alloc
    return result


def place_slots(
    chosen: Mapping[str, Sequence[tuple[str, int]]],
    cluster: ClusterView,
    previous: Mapping[str, tuple[str, tuple[Worker, ...]]],
) -> dict[str, tuple[str, tuple[Worker, ...]]]:
    """GPU slots for each chosen (job id, GPU count) per kind, as Gavel's mechanism places them
    (Sia's `gavel.py`): per kind, larger jobs first; a job keeps its `previous` slots when it
    has the same kind and count and they are all still free, otherwise it takes free slots node
    by node in node order. Only a change of slots restarts a job. The counts must fit each
    kind's GPUs (Gavel's round admits them so); anything else is an error.
    """
    placed: dict[str, tuple[str, tuple[Worker, ...]]] = {}
    for kind, members in chosen.items():
        queue = [
            [(node.name, slot) for slot in range(node.num_gpus)] for node in cluster.nodes_of(kind)
        ]
        used: set[Worker] = set()
        server = 0
        ordered = sorted(members, key=lambda m: -m[1])
        for size in sorted({m[1] for m in members}, reverse=True):
            group = [job_id for job_id, need in ordered if need == size]
            for job_id in group:
                before = previous.get(job_id)
                if before is None or before[0] != kind or len(before[1]) != size:
                    continue
                if any(w in used for w in before[1]):
                    continue
                placed[job_id] = before
                used.update(before[1])
            for job_id in group:
                if job_id in placed:
                    continue
                workers: list[Worker] = []
                while len(workers) < size and server < len(queue):
                    if not queue[server]:
                        server += 1
                        continue
                    worker = queue[server].pop(0)
                    if worker not in used:
                        workers.append(worker)
                        used.add(worker)
                if len(workers) != size:
                    raise ThriftyError(f"Gavel could not place job '{job_id}' on {kind}")
                placed[job_id] = (kind, tuple(workers))
    return placed


def slots_allocation(kind: str, workers: Iterable[Worker]) -> Allocation:
    """The allocation (GPUs per node) that a set of GPU slots amounts to."""
    return Allocation(dict(Counter(node for node, _ in workers)), kind)


def shrink(allocation: Allocation, replicas: int) -> Allocation:
    """The same placement with only `replicas` GPUs, taken from the nodes in name order (how
    quotas and the live scheduler's replica cap trim a job)."""
    left, gpus = replicas, {}
    for node in sorted(allocation.gpus):
        count = min(allocation.gpus[node], left)
        if count:
            gpus[node] = count
            left -= count
    return Allocation(gpus, allocation.kind)


def keep_fullest(allocation: Allocation, replicas: int) -> Allocation:
    """`replicas` of the allocation's GPUs, taken from its fullest nodes first (ties by name):
    how a budget shrinks an adaptive job while keeping its synchronisation inside nodes."""
    gpus: dict[str, int] = {}
    for name, count in sorted(allocation.gpus.items(), key=lambda kv: (-kv[1], kv[0])):
        if replicas <= 0:
            break
        gpus[name] = min(count, replicas)
        replicas -= gpus[name]
    return Allocation(gpus=gpus, kind=allocation.kind)

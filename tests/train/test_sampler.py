from __future__ import annotations

import pytest
import torch

from thrifty.train import ElasticSampler


def _consume(samplers: list[ElasticSampler], atomic: int, accum: int, steps: int) -> list[int]:
    """Indices of `steps` optimizer steps over all replicas, advancing every sampler."""
    taken: list[int] = []
    for _ in range(steps):
        batches = [s.next_batch(atomic, accum) for s in samplers]
        if batches[0] is None:
            break
        total = samplers[0].batch_total(atomic, accum)
        assert all(batch is not None for batch in batches)
        for step in range(accum + 1):  # micro-step major, then replica: the global order
            for batch in batches:
                taken.extend(batch[step])  # type: ignore[index]
        for s in samplers:
            s.position += total
    return taken


@pytest.mark.parametrize(("replicas", "atomic", "accum"), [(1, 7, 0), (2, 5, 1), (3, 4, 2)])
def test_every_sample_is_used_once_per_epoch(replicas: int, atomic: int, accum: int) -> None:
    samplers = [ElasticSampler(101, replicas, r, seed=3) for r in range(replicas)]
    taken = _consume(samplers, atomic, accum, 10_000)
    pieces = replicas * (accum + 1)
    assert len(taken) == len(set(taken))
    # Only a remainder smaller than one sample per micro-batch may be left out.
    assert 101 - pieces < len(taken) <= 101
    assert set(taken) <= set(range(101))


def test_resume_with_other_replicas_and_batch_continues_at_the_next_sample() -> None:
    three = [ElasticSampler(500, 3, r, seed=1) for r in range(3)]
    three[0].epoch = 2
    for s in three:
        s.epoch = 2
    before = _consume(three, 8, 0, 7)
    state = three[0].state_dict()
    two = [ElasticSampler(500, 2, r, seed=1) for r in range(2)]
    for s in two:
        s.load_state_dict(state)
    after = _consume(two, 10, 1, 5)
    permutation = two[0].permutation(2).tolist()
    assert before + after == permutation[: len(before) + len(after)]
    assert sorted(before + after) != before + after  # shuffled, not in order


def test_permutation_depends_on_seed_and_epoch_only() -> None:
    a = ElasticSampler(50, 2, 0, seed=5)
    b = ElasticSampler(50, 4, 3, seed=5)
    assert torch.equal(a.permutation(1), b.permutation(1))
    assert not torch.equal(a.permutation(1), a.permutation(2))
    assert torch.equal(ElasticSampler(9, 1, 0, shuffle=False).permutation(4), torch.arange(9))

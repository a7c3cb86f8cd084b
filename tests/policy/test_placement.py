"""The placement functions every policy shares, tested directly."""

from __future__ import annotations

import pytest

from thrifty.errors import ThriftyError
from thrifty.policy.base import Allocation, ClusterView, NodeView
from thrifty.policy.placement import (
    free_gpus,
    keep_fullest,
    most_free,
    pack,
    packed_shape,
    place_counts,
    place_slots,
    shrink,
    slots_allocation,
    take,
)

MIXED = ClusterView((NodeView("a0", "a100", 8), NodeView("a1", "a100", 8),
                     NodeView("t0", "t4", 4), NodeView("t1", "t4", 4), NodeView("t2", "t4", 2)))


def test_free_gpus_and_take_track_what_is_left() -> None:
    free = free_gpus(MIXED, [Allocation({"a0": 3}, "a100"), Allocation({"t0": 4}, "t4")])
    assert free == {"a0": 5, "a1": 8, "t0": 0, "t1": 4, "t2": 2}
    take(free, Allocation({"a1": 2, "t1": 1}, "a100"))
    assert free["a1"] == 6 and free["t1"] == 3


def test_pack_takes_the_tightest_single_node_then_the_fewest_nodes() -> None:
    free = free_gpus(MIXED, [])
    assert pack(2, free, MIXED, ["t4"]) == Allocation({"t2": 2}, "t4")
    assert pack(4, free, MIXED, ["t4"]) == Allocation({"t0": 4}, "t4")
    assert pack(6, free, MIXED, ["t4"]) == Allocation({"t0": 4, "t1": 2}, "t4")
    # Across kinds: fewest nodes first, then the order given.
    assert pack(8, free, MIXED) == Allocation({"a0": 8}, "a100")
    assert pack(11, free, MIXED, ["t4"]) is None and pack(0, free, MIXED) is None


def test_most_free_goes_node_by_node_from_the_emptiest() -> None:
    free = {"a0": 2, "a1": 6, "t0": 4, "t1": 4, "t2": 2}
    assert most_free(2, free, MIXED, "t4") == Allocation({"t0": 2}, "t4")  # not the tight t2
    assert most_free(7, free, MIXED, "a100") == Allocation({"a1": 6, "a0": 1}, "a100")
    assert most_free(9, free, MIXED, "a100") is None


def test_packed_shape_fills_the_largest_nodes_first() -> None:
    assert packed_shape(MIXED, "t4", 9) == (4, 4, 1)
    assert packed_shape(MIXED, "a100", 3) == (3,)
    assert sum(packed_shape(MIXED, "t4", 20)) == 10  # no more than the kind has


def test_place_counts_keeps_unchanged_jobs_and_places_the_rest_largest_first() -> None:
    kept = Allocation({"t1": 4}, "t4")
    wants = [("small", "t4", 2, 0.0), ("kept", "t4", 4, 5.0), ("whole", "a100", 16, 3.0),
             ("one", "a100", 1, 1.0)]
    placed = place_counts(wants, {"kept": kept}, MIXED)
    assert placed["kept"] is kept
    assert placed["whole"] == Allocation({"a0": 8, "a1": 8}, "a100")
    assert placed["small"] == Allocation({"t2": 2}, "t4")  # the tightest node that fits
    assert "one" not in placed  # the a100s are full


def test_place_counts_spreads_over_fragments_rather_than_wait() -> None:
    keep = {"x": Allocation({"t0": 2}, "t4"), "y": Allocation({"t1": 2}, "t4")}
    wants = [("x", "t4", 2, 0.0), ("y", "t4", 2, 0.0), ("big", "t4", 4, 1.0)]
    placed = place_counts(wants, keep, MIXED)
    assert placed["big"].num_replicas == 4 and placed["big"].num_nodes == 2
    # A kept job whose nodes are taken is placed anew.
    taken = place_counts([("a", "t4", 4, 0.0), ("b", "t4", 4, 1.0)],
                         {"a": Allocation({"t0": 4}, "t4"), "b": Allocation({"t0": 4}, "t4")},
                         MIXED)
    assert taken["a"] == Allocation({"t0": 4}, "t4") and taken["b"] == Allocation({"t1": 4}, "t4")


def test_place_slots_keeps_previous_slots_and_fills_in_node_order() -> None:
    previous = {"b": ("t4", (("t1", 0), ("t1", 1)))}
    placed = place_slots({"t4": [("a", 4), ("b", 2), ("c", 2)]}, MIXED, previous)
    assert placed["b"] == previous["b"]
    assert placed["a"] == ("t4", tuple(("t0", s) for s in range(4)))
    assert placed["c"] == ("t4", (("t1", 2), ("t1", 3)))
    assert slots_allocation(*placed["a"]) == Allocation({"t0": 4}, "t4")
    with pytest.raises(ThriftyError, match="could not place job 'd'"):
        place_slots({"t4": [("d", 12)]}, MIXED, {})


def test_shrink_takes_nodes_in_name_order_and_keep_fullest_the_fullest() -> None:
    alloc = Allocation({"b": 2, "a": 3, "c": 4}, "t4")
    assert shrink(alloc, 4) == Allocation({"a": 3, "b": 1}, "t4")
    assert keep_fullest(alloc, 5) == Allocation({"c": 4, "a": 1}, "t4")
    assert keep_fullest(alloc, 9) == alloc and shrink(alloc, 0).num_replicas == 0

"""Configurations, goodput tables, the assignment program and placement (Sia and thrifty)."""

from __future__ import annotations

import numpy as np

from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.configs import (
    GoodputTable,
    choose_configs,
    cluster_configs,
    config_of,
    place_configs,
)

LIMITS = BatchLimits(init_batch_size=128, max_batch_size=8192, min_local_bsz=16, max_local_bsz=256)
PARAMS = ThroughputParams(0.05, 0.002, 0.01, 0.0005, 0.02, 0.001, 2.0)
CLUSTER = ClusterView(
    tuple(NodeView(f"t4-{i}", "t4", 4) for i in range(3))
    + tuple(NodeView(f"a100-{i}", "a100", 8) for i in range(2))
)


def view(name: str, model: GoodputModel | None = None, alloc: Allocation | None = None,
         max_replicas: int = 64) -> JobView:
    return JobView(id=name, submit_time=0.0, model=model, limits=LIMITS, allocation=alloc,
                   max_replicas=max_replicas)


def test_configurations_are_powers_of_two_in_a_node_then_whole_nodes() -> None:
    configs = cluster_configs(CLUSTER)
    listed = [configs.of(i) for i in range(len(configs))]
    assert listed == [("a100", 1), ("a100", 2), ("a100", 4), ("a100", 8), ("a100", 16),
                      ("t4", 1), ("t4", 2), ("t4", 4), ("t4", 8), ("t4", 12)]
    assert configs.capacity.tolist() == [16, 12]
    two_nodes = Allocation({"t4-0": 4, "t4-2": 4}, "t4")
    assert configs.of(config_of(two_nodes, configs)) == ("t4", 8)
    assert config_of(Allocation({"t4-0": 3}, "t4"), configs) == -1  # not a configuration
    assert config_of(None, configs) == -1


def test_one_gpu_profile_of_a_kind_is_projected_from_the_kind_run_at_scale() -> None:
    fast = ThroughputParams(0.01, 0.0004, 0.01, 0.0005, 0.02, 0.001, 2.0)  # 5x faster compute
    model = GoodputModel({"t4": PARAMS, "a100": fast}, GradientStats(1.0, 200.0), LIMITS,
                         explored={"t4": 8, "a100": 1})
    configs = cluster_configs(CLUSTER)
    row = GoodputTable(CLUSTER).rows([view("j", model)])[0]
    t4 = {configs.of(i)[1]: row[i] for i in range(len(configs)) if configs.of(i)[0] == "t4"}
    a100 = {configs.of(i)[1]: row[i] for i in range(len(configs)) if configs.of(i)[0] == "a100"}
    ratio = a100[1] / t4[1]
    assert ratio > 2
    for count in (2, 4, 8):  # the a100 model was never fitted beyond one GPU: t4's shape, scaled
        assert np.isclose(a100[count], t4[count] * ratio)


def test_rows_respect_the_growth_cap_and_unknown_jobs_get_one_gpu() -> None:
    configs = cluster_configs(CLUSTER)
    model = GoodputModel({"t4": PARAMS, "a100": PARAMS}, GradientStats(1.0, 200.0), LIMITS)
    rows = GoodputTable(CLUSTER).rows([view("capped", model, max_replicas=2), view("new")])
    assert np.all(rows[0][configs.count > 2] == 0) and np.all(rows[0][configs.count <= 2] > 0)
    assert set(configs.count[rows[1] > 0].tolist()) == {1}


def test_the_program_maximises_value_within_each_kind() -> None:
    configs = cluster_configs(CLUSTER)
    values = np.zeros((3, len(configs)))
    a16 = next(i for i in range(len(configs)) if configs.of(i) == ("a100", 16))
    a8 = next(i for i in range(len(configs)) if configs.of(i) == ("a100", 8))
    t4 = next(i for i in range(len(configs)) if configs.of(i) == ("t4", 12))
    values[0, [a16, a8, t4]] = [3.0, 2.0, 1.0]
    values[1, [a16, a8]] = [2.5, 2.4]
    values[2, t4] = 0.5
    choice = choose_configs(values, configs)
    # Best total: job 0 and 1 split the a100s (2 + 2.4), job 2 takes the t4s.
    assert [configs.of(c) for c in choice] == [("a100", 8), ("a100", 8), ("t4", 12)]
    assert (choose_configs(-values, configs) == -1).all()


def test_placement_keeps_unchanged_jobs_and_packs_the_rest_without_overlap() -> None:
    configs = cluster_configs(CLUSTER)
    index = {configs.of(i): i for i in range(len(configs))}
    kept = Allocation({"a100-1": 4}, "a100")
    jobs = [view("kept", alloc=kept), view("big"), view("small"), view("tiny")]
    choice = np.array([index["a100", 4], index["t4", 8], index["a100", 8], index["a100", 2]])
    result = place_configs(choice, jobs, configs, CLUSTER)
    assert result["kept"] == kept
    assert sorted(result["big"].gpus.values()) == [4, 4]
    assert result["small"].gpus == {"a100-0": 8}
    assert result["tiny"].gpus == {"a100-1": 2}  # the tightest node that fits
    used: dict[str, int] = {}
    for alloc in result.values():
        for node, n in alloc.gpus.items():
            used[node] = used.get(node, 0) + n
    assert all(used[n.name] <= n.num_gpus for n in CLUSTER.nodes if n.name in used)

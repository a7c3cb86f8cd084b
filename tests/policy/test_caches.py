"""Policy caches are keyed by value: a model re-parsed every round (as the live scheduler does
with each report) hits them, and a model that predicts differently does not."""

from __future__ import annotations

from dataclasses import replace

from thrifty.goodput import (
    BatchLimits,
    GoodputGrid,
    GoodputModel,
    GradientStats,
    ThroughputParams,
)
from thrifty.policy.base import ClusterView, JobView, NodeView
from thrifty.policy.configs import GoodputTable
from thrifty.policy.pollux import PolluxPolicy

LIMITS = BatchLimits(init_batch_size=128, max_batch_size=8192, min_local_bsz=16, max_local_bsz=256)
PARAMS = ThroughputParams(0.05, 0.002, 0.01, 0.0005, 0.02, 0.001, 2.0)
CLUSTER = ClusterView(tuple(NodeView(f"n{i}", "t4", 4) for i in range(4)))
MODEL = GoodputModel({"t4": PARAMS}, GradientStats(1.0, 200.0), LIMITS, explored={"t4": 2},
                     progress=10.0, target_progress=1000.0)


def reparsed(model: GoodputModel) -> GoodputModel:
    """The same model as a new object, as a report parsed again would give."""
    return GoodputModel.from_dict(model.to_dict())


def view(model: GoodputModel) -> JobView:
    return JobView(id="j", submit_time=0.0, model=model, limits=LIMITS, max_replicas=8)


def test_equal_models_are_equal_and_hash_alike() -> None:
    again = reparsed(MODEL)
    assert again is not MODEL and again == MODEL and hash(again) == hash(MODEL)
    assert MODEL.same_predictions(replace(MODEL, progress=500.0))
    assert not MODEL.same_predictions(replace(MODEL, explored={"t4": 4}))


def test_configuration_rows_are_reused_for_a_reparsed_model() -> None:
    table = GoodputTable(CLUSTER)
    first = table.rows([view(MODEL)])
    assert table.builds == 1
    again = table.rows([view(reparsed(MODEL))])
    assert table.builds == 1 and (again == first).all()
    table.rows([view(replace(reparsed(MODEL), progress=20.0))])  # progress alone: same row
    assert table.builds == 1
    faster = replace(PARAMS, beta_c=0.001)
    table.rows([view(replace(MODEL, throughput={"t4": faster}))])
    assert table.builds == 2


def test_pollux_keeps_a_jobs_grid_for_a_reparsed_model() -> None:
    policy = PolluxPolicy(population=4, generations=1)
    policy.allocate([view(MODEL)], CLUSTER, 0.0)
    grid = policy._tables["j"]
    assert isinstance(grid, GoodputGrid)
    policy.allocate([view(reparsed(MODEL))], CLUSTER, 60.0)
    assert policy._tables["j"] is grid
    policy.allocate([view(replace(MODEL, grad=GradientStats(1.0, 50.0)))], CLUSTER, 120.0)
    assert policy._tables["j"] is not grid

"""Cloud autoscaling: when the fleet grows and shrinks, what it never does, and what it bills."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from thrifty.accounting.tariff import load_tariff
from thrifty.errors import InputError, ThriftyError
from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.autoscale import AutoscaleConfig, Fleet, SpeedupTable, cluster_goodput, decide
from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView
from thrifty.policy.thrifty import ThriftyPolicy
from thrifty.sim.autoscale import Autoscaler
from thrifty.sim.cluster import load_cluster
from thrifty.sim.costing import held_bill
from thrifty.sim.engine import SimSettings, simulate
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import TraceJob, Workload

PRICE = 4.0  # USD per node-hour
POOL = tuple(NodeView(f"t4-{i}", "t4", 4, PRICE) for i in range(8))
LIMITS = BatchLimits(init_batch_size=128, max_batch_size=16384, min_local_bsz=16,
                     max_local_bsz=256)
# Compute-bound with a cheap all-reduce, and a large gradient noise scale: big batches stay
# efficient, so every extra GPU adds nearly its own throughput.
SCALES = GoodputModel({"t4": ThroughputParams(0.02, 0.004, 0.001, 1e-5, 0.002, 1e-5, 2.0)},
                      GradientStats(1.0, 5000.0), LIMITS, explored={"t4": 64})
# A noise scale of 20 samples: larger batches soon stop paying, so each GPU adds less.
MODEST = GoodputModel({"t4": ThroughputParams(0.02, 0.004, 0.01, 0.001, 0.05, 0.005, 2.0)},
                      GradientStats(1.0, 20.0), LIMITS, explored={"t4": 64})
# All-reduce across GPUs costs seconds, and the gradient noise is small: one GPU is its best.
FLAT = GoodputModel({"t4": ThroughputParams(0.02, 0.004, 2.0, 0.05, 5.0, 0.1, 1.0)},
                    GradientStats(1.0, 1.0), LIMITS, explored={"t4": 64})


def job(name: str, model: GoodputModel | None, max_replicas: int = 64,
        alloc: Allocation | None = None) -> JobView:
    return JobView(id=name, submit_time=0.0, model=model, limits=LIMITS, allocation=alloc,
                   max_replicas=max_replicas, replica_limit=max_replicas)


def on(*nodes: str) -> Allocation:
    return Allocation({n: 4 for n in nodes}, "t4")


def fleet(ready: Sequence[str], busy: Sequence[str] = (), pending: Sequence[str] = (),
          idle_since: dict[str, float] | None = None) -> Fleet:
    return Fleet(POOL, tuple(ready), tuple(pending), frozenset(busy),
                 idle_since or {n: 0.0 for n in ready if n not in busy})


# --- the estimate ------------------------------------------------------------------------


def test_cluster_goodput_grows_with_gpus_only_for_a_job_that_scales() -> None:
    table = SpeedupTable.build([job("a", SCALES), job("b", FLAT)], Autoscaler(POOL)._goodput)
    one, eight = table.capacity({"t4": 4}), table.capacity({"t4": 32})
    alone = SpeedupTable.build([job("b", FLAT)], Autoscaler(POOL)._goodput)
    assert cluster_goodput(table, eight) > 2 * cluster_goodput(table, one)
    assert cluster_goodput(alone, eight) == pytest.approx(cluster_goodput(alone, one))
    assert cluster_goodput(table, table.capacity({})) == 0.0


# --- growing -------------------------------------------------------------------------------


def test_it_grows_for_a_job_that_gains_from_more_gpus() -> None:
    decision = decide([job("a", SCALES, alloc=on("t4-0"))], fleet(["t4-0"], busy=["t4-0"]), 600.0,
                      AutoscaleConfig())
    assert len(decision.request) >= 1 and not decision.release
    assert set(decision.request) <= {n.name for n in POOL} - {"t4-0"}


def test_it_does_not_grow_for_a_job_that_does_not() -> None:
    one_gpu = Allocation({"t4-0": 1}, "t4")
    decision = decide([job("b", FLAT, alloc=one_gpu)], fleet(["t4-0"], busy=["t4-0"]), 600.0,
                      AutoscaleConfig())
    assert decision.request == () and decision.release == ()


def test_an_empty_fleet_rents_a_first_node_for_a_waiting_job() -> None:
    decision = decide([job("new", None, max_replicas=1)], fleet([]), 0.0, AutoscaleConfig())
    assert decision.request == ("t4-0",)


def test_a_rigid_request_of_several_nodes_is_rented_in_one_step() -> None:
    decision = decide([job("rigid", None, max_replicas=12)], fleet([]), 0.0, AutoscaleConfig())
    assert len(decision.request) == 3  # 12 GPUs on 4-GPU nodes: nothing runs with fewer


def test_booting_nodes_count_as_held_so_they_are_not_requested_twice() -> None:
    jobs = [job("a", SCALES, alloc=on("t4-0"))]
    first = decide(jobs, fleet(["t4-0"], busy=["t4-0"]), 600.0, AutoscaleConfig())
    again = decide(jobs, fleet(["t4-0"], busy=["t4-0"], pending=first.request), 660.0,
                   AutoscaleConfig())
    assert not set(again.request) & set(first.request)
    assert len(first.request) + len(again.request) <= len(POOL) - 1


def test_a_higher_threshold_rents_fewer_nodes_for_diminishing_returns() -> None:
    jobs = [job("a", MODEST, alloc=on("t4-0"))]
    sizes = [len(decide(jobs, fleet(["t4-0"], busy=["t4-0"]), 600.0,
                        AutoscaleConfig(grow_threshold=g, shrink_threshold=0.0)).request)
             for g in (0.1, 0.5, 0.9)]
    assert sizes[0] > sizes[1] > sizes[2]


# --- releasing -----------------------------------------------------------------------------


def test_idle_nodes_are_released_and_busy_ones_never() -> None:
    ready = [n.name for n in POOL[:4]]
    decision = decide([job("b", FLAT, alloc=Allocation({"t4-2": 1}, "t4"))],
                      fleet(ready, busy=["t4-2"]), 600.0, AutoscaleConfig())
    assert set(decision.release) == {"t4-0", "t4-1", "t4-3"}


def test_a_busy_node_is_kept_even_when_its_job_gains_nothing_from_it() -> None:
    ready = [n.name for n in POOL[:3]]
    # FLAT gains nothing from 12 GPUs, but a node with GPUs allocated is never taken away.
    decision = decide([job("b", FLAT, alloc=on(*ready))], fleet(ready, busy=ready), 1e6,
                      AutoscaleConfig(idle_timeout_s=0.0))
    assert decision.release == ()


def test_a_node_the_policy_leaves_idle_is_released_after_the_timeout_and_not_regrown() -> None:
    jobs = [job("a", SCALES, alloc=on("t4-0"))]
    config = AutoscaleConfig(idle_timeout_s=300.0)
    ready = ["t4-0", "t4-1"]
    soon = decide(jobs, fleet(ready, busy=["t4-0"], idle_since={"t4-1": 0.0}), 120.0, config)
    assert "t4-1" not in soon.release  # worth having, and not idle for long yet
    late = decide(jobs, fleet(ready, busy=["t4-0"], idle_since={"t4-1": 0.0}), 300.0, config)
    assert late.release == ("t4-1",) and late.request == () and late.refused == {"t4"}


def test_the_floor_is_kept_and_the_ceiling_never_passed() -> None:
    idle = decide([], fleet(["t4-0", "t4-1", "t4-2"]), 600.0, AutoscaleConfig(min_nodes=2))
    assert len(idle.release) == 1
    start = decide([], fleet([]), 0.0, AutoscaleConfig(min_nodes=2))
    assert start.request == ("t4-0", "t4-1")
    capped = decide([job("a", SCALES, alloc=on("t4-0"))], fleet(["t4-0"], busy=["t4-0"]), 600.0,
                    AutoscaleConfig(max_nodes=3, grow_threshold=0.01, shrink_threshold=0.0))
    assert len(capped.request) == 2


def test_bad_settings_are_named() -> None:
    with pytest.raises(ThriftyError, match="max_nodes"):
        AutoscaleConfig(min_nodes=4, max_nodes=2)
    with pytest.raises(ThriftyError, match=r"autoscale\.shrink_threshold"):
        AutoscaleConfig(grow_threshold=0.2, shrink_threshold=0.5)
    with pytest.raises(ThriftyError, match="min_nodes"):
        Autoscaler(POOL[:2], AutoscaleConfig(min_nodes=3))
    with pytest.raises(ThriftyError, match="one node shape"):
        Autoscaler((*POOL[:2], NodeView("t4-9", "t4", 8, PRICE)))


# --- in the simulator: delay, floor, ceiling, and the bill ---------------------------------


class Recording(ThriftyPolicy):
    """The default policy, remembering which nodes it was shown and what it granted."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, frozenset[str], frozenset[str]]] = []

    def allocate(self, jobs: Sequence[JobView], cluster: ClusterView, now: float
                 ) -> dict[str, Allocation]:
        result = super().allocate(jobs, cluster, now)
        used = frozenset(n for a in result.values() for n in a.gpus)
        self.seen.append((now, frozenset(n.name for n in cluster.nodes), used))
        return result


@pytest.fixture(scope="module")
def scaled_run(data_root: Path) -> tuple:
    cluster = load_cluster("pollux64")
    profiles = ProfileSet(data_root, "pollux")
    jobs = (TraceJob("cifar10-0", 0.0, "cifar10", 4, 512),
            TraceJob("ncf-1", 0.0, "ncf", 1, 32768),
            TraceJob("cifar10-2", 1500.0, "cifar10", 4, 512))
    config = AutoscaleConfig(min_nodes=1, max_nodes=6, provision_delay_s=150.0)
    scaler = Autoscaler(tuple(NodeView(n.name, n.gpu_kind, n.num_gpus, n.price_per_hour)
                              for n in cluster.nodes), config)
    policy = Recording()
    result = simulate(Workload("t", Path("t.csv"), jobs), cluster, policy, profiles,
                      SimSettings(), autoscaler=scaler)
    return result, policy.seen, config, cluster


def test_nodes_serve_only_after_the_delay_and_only_while_held(scaled_run) -> None:
    result, seen, config, _ = scaled_run
    assert len(result.nodes) > 1
    for record in result.nodes:
        assert record.ready_s == pytest.approx(record.requested_s + config.provision_delay_s)
        shown = [now for now, nodes, _ in seen if record.name in nodes
                 and record.requested_s <= now < (record.released_s or math.inf)]
        assert all(now >= record.ready_s for now in shown)
    for now, nodes, used in seen:
        held = {r.name for r in result.nodes if r.requested_s <= now < (r.released_s or 0)}
        assert used <= nodes <= held


def test_no_node_is_released_with_an_allocation_on_it(scaled_run) -> None:
    result, seen, _, _ = scaled_run
    for record in result.nodes[:-1]:
        granted = [used for now, _, used in seen if now == record.released_s]
        assert all(record.name not in used for used in granted)


def test_floor_and_ceiling_hold_throughout(scaled_run) -> None:
    result, _, config, _ = scaled_run
    end = max(r.released_s or 0 for r in result.nodes)
    for t in range(0, int(end), 60):
        held = sum(1 for r in result.nodes if r.requested_s <= t < (r.released_s or 0))
        assert config.min_nodes <= held <= config.max_nodes
    assert any(r.released_s < end for r in result.nodes)  # it did shrink between the jobs


def test_the_bill_is_every_held_node_second_at_its_price(scaled_run, data_root: Path) -> None:
    result, _, _, cluster = scaled_run
    tariff = load_tariff(data_root, cluster.kinds)
    hours, usd = held_bill(result, tariff)
    price = {n.name: n.price_per_hour for n in cluster.nodes}
    expected = sum((r.released_s - r.requested_s) / 3600 * price[r.name] for r in result.nodes)
    assert usd == pytest.approx(expected)
    assert hours == pytest.approx(sum(r.released_s - r.requested_s for r in result.nodes) / 3600)
    assert hours < len(cluster.nodes) * max(r.released_s for r in result.nodes) / 3600


def test_a_fixed_cluster_bills_every_node_for_the_whole_run(data_root: Path) -> None:
    cluster = load_cluster("pollux64")
    profiles = ProfileSet(data_root, "pollux")
    result = simulate(Workload("t", Path("t.csv"), (TraceJob("ncf-0", 0.0, "ncf", 1, 32768),)),
                      cluster, ThriftyPolicy(), profiles)
    tariff = load_tariff(data_root, cluster.kinds)
    end = 60.0 * math.ceil(result.jobs[0].completion_time / 60.0)
    hours, usd = held_bill(result, tariff)
    assert hours == pytest.approx(16 * end / 3600)
    assert usd == pytest.approx(16 * 3.912 * end / 3600)


# --- the cluster file ----------------------------------------------------------------------

GOOD = """
name = "cloud"
profiles = "pollux"
[[nodes]]
kind = "aws"
count = 8
gpus = 4
price_per_hour = 3.912
[autoscale]
min_nodes = 1
max_nodes = 6
provision_delay_s = 240
grow_threshold = 0.4
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cloud.toml"
    path.write_text(text)
    return str(path)


def test_the_autoscale_table_is_read(tmp_path: Path) -> None:
    spec = load_cluster(write(tmp_path, GOOD))
    assert spec.autoscale == AutoscaleConfig(min_nodes=1, max_nodes=6, provision_delay_s=240.0,
                                             grow_threshold=0.4)
    assert len(spec.nodes) == 8


@pytest.mark.parametrize(("old", "new", "field"), [
    ("price_per_hour = 3.912", "price_per_hour = -1.0", "nodes[0].price_per_hour"),
    ("max_nodes = 6", "max_nodes = 0", "autoscale.max_nodes"),
    ("min_nodes = 1", "min_nodes = 7", "autoscale.max_nodes"),
    ("min_nodes = 1\nmax_nodes = 6", "min_nodes = 9", "autoscale.min_nodes"),
    ("max_nodes = 6", "max_nodes = 9", "autoscale.max_nodes"),
    ('kind = "aws"', 'kind = "h100"', "nodes[0].kind"),
    ("provision_delay_s = 240", "provision_delay_s = -5", "autoscale.provision_delay_s"),
    ("grow_threshold = 0.4", "grow_treshold = 0.4", "autoscale"),
    ("grow_threshold = 0.4", "grow_threshold = 0.1", "autoscale.shrink_threshold"),
])
def test_bad_autoscale_input_names_the_field(tmp_path: Path, old: str, new: str,
                                             field: str) -> None:
    assert old in GOOD
    with pytest.raises(InputError) as err:
        load_cluster(write(tmp_path, GOOD.replace(old, new)))
    assert err.value.field == field
    assert f"field '{field}'" in str(err.value)


def test_the_example_cloud_cluster_loads() -> None:
    path = Path(__file__).parents[2] / "examples" / "clusters" / "cloud-t4.toml"
    spec = load_cluster(str(path))
    assert spec.autoscale is not None and spec.autoscale.max_nodes == len(spec.nodes) == 16


def test_simulate_autoscale_from_the_command_line(tmp_path: Path, data_root: Path) -> None:
    """Rigid jobs under FIFO on the example cloud cluster: the bill is its node-hours at the
    file's price, and less than holding all 16 nodes for as long."""
    workload = tmp_path / "six.csv"
    workload.write_text("name,time,application,num_replicas,batch_size\n" + "".join(
        f"job-{i},{i * 400},{app},{replicas},{batch}\n" for i, (app, replicas, batch) in
        enumerate([("ncf", 1, 32768), ("cifar10", 8, 1024), ("ncf", 2, 32768),
                   ("cifar10", 4, 512), ("ncf", 1, 32768), ("cifar10", 2, 256)])))
    cluster = Path(__file__).parents[2] / "examples" / "clusters" / "cloud-t4.toml"
    report = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, "-m", "thrifty.cli", "simulate", str(workload), "-c", str(cluster),
         "-p", "fifo", "--autoscale", "--workers", "1", "--json", str(report),
         "--data", str(data_root)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stderr
    assert "autoscaled" in done.stdout and "held USD" in done.stdout
    (row,) = json.loads(report.read_text())["runs"]
    assert row["held_usd"] == pytest.approx(row["node_hours"] * 3.912)
    assert 0 < row["node_hours"] < 16 * row["makespan_s"] / 3600

"""The simulator and the live scheduler show a policy the same view of the same job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from thrifty.cluster.deciding import JobFacts, live_view
from thrifty.cluster.schema import JobRow
from thrifty.cluster.spec import validate_spec
from thrifty.contract import Allocation, JobReport
from thrifty.sim.cluster import load_cluster
from thrifty.sim.job import SimJob
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import TraceJob


def test_one_job_seen_by_the_simulator_and_the_live_scheduler_gives_equal_views(
    data_root: Path,
) -> None:
    cluster = load_cluster("pollux64")
    profiles = ProfileSet(data_root, "pollux")
    sim_spec = TraceJob("cifar10-1", 40.0, "cifar10", num_replicas=cluster.num_gpus,
                       batch_size=256, user="ann", team="ml", deadline=7200.0)
    sim = SimJob(spec=sim_spec, profile=profiles.get("cifar10", cluster.kinds),
                 cluster=cluster, adaptive=True, max_replicas_cap=cluster.num_gpus)
    # It trains for a while on two GPUs of one node, so it has a model that has seen two.
    alloc = Allocation({"aws-0": 2}, "aws")
    sim.reallocate(alloc)
    sim.advance(60.0, 600.0)
    model = sim.model()
    assert model is not None and max(model.explored.values()) == 2

    # The same job live: its owner asked for the whole cluster, the same batch and deadline,
    # and its newest report carries the same model.
    spec = validate_spec({
        "name": "cifar10", "entrypoint": {"script": "train.py"}, "owner": "ml/ann",
        "batch_size": 256, "deadline_s": 7200.0,
        "resources": {"max_replicas": cluster.num_gpus},
    })
    row = JobRow(id="cifar10-1", name="cifar10", owner="ml/ann", team="ml",
                 spec=spec.model_dump(mode="json"), submitted_at=40.0,
                 allocation=alloc.to_dict(), restarts=sim.restarts,
                 attained_service=sim.attained_service,
                 report=JobReport(model, "cifar10-1").to_dict(), reported_at=600.0)
    live = live_view(row, spec, JobFacts().report(row), restart_s=sim.restart_delay)
    simulated = sim.view(660.0, sim.restart_delay)

    assert simulated.max_replicas == live.max_replicas == 4
    assert simulated.replica_limit == live.replica_limit
    assert live.model == simulated.model and live.limits == simulated.limits
    # Everything else is equal too, but for two things each side must have its own way: the
    # simulated job is its own oracle (its true speed), and a live spec's minimum is at least
    # one replica where a simulated job has none (both: any non-empty allocation).
    assert live.min_replicas == 1 and simulated.min_replicas == 0
    assert replace(live, oracle=None, min_replicas=0) == replace(simulated, oracle=None)

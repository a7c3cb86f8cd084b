from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from thrifty.errors import ThriftyError
from thrifty.goodput import GradientStats, gain
from thrifty.policy.base import Allocation, BasePolicy, ClusterView, JobView
from thrifty.policy.fifo import FifoPolicy
from thrifty.sim.cluster import load_cluster
from thrifty.sim.engine import SimSettings, simulate
from thrifty.sim.metrics import summarize
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import TraceJob, Workload


def workload(*jobs: TraceJob) -> Workload:
    return Workload("test", Path("test.csv"), tuple(jobs))


def test_a_lone_rigid_job_takes_exactly_its_profiled_time(data_root: Path) -> None:
    cluster = load_cluster("pollux64")
    profiles = ProfileSet(data_root, "pollux")
    spec = TraceJob("solo", 0.0, "ncf", 1, 32768)
    result = simulate(workload(spec), cluster, FifoPolicy(), profiles)
    app = profiles.get("ncf", ("aws",))
    # Expected: starts at the first round (t = 60 s), pays the 30 s start-up delay, then trains
    # each epoch at the profiled step time (one GPU above the initial batch accumulates once).
    step, sync = app.kind("aws").step_time((1,), 16384)
    seconds, done = 60.0 + 30.0, 0.0
    for epoch in range(app.epochs):
        stats = GradientStats(*app.grad_stats(32768.0, epoch))
        rate = float(gain(stats, app.init_batch_size, 32768)) / (step + (step - sync))
        seconds += (app.epoch_progress[epoch] - done) / rate
        done = app.epoch_progress[epoch]
    job = result.jobs[0]
    assert job.completion_time == pytest.approx(seconds, rel=1e-6)
    assert job.restarts == 0
    assert job.gpu_seconds["aws"] == pytest.approx(seconds - 60.0, rel=1e-6)


def test_fifo_completes_every_job_and_queues_in_order(data_root: Path) -> None:
    cluster = load_cluster("pollux64")
    jobs = [TraceJob(f"big-{i}", float(i), "cifar10", 64, 4096) for i in range(2)]
    jobs.append(TraceJob("small", 5.0, "ncf", 1, 32768))
    result = simulate(workload(*jobs), cluster, FifoPolicy(), ProfileSet(data_root, "pollux"))
    by_name = {j.name: j for j in result.jobs}
    assert all(j.completion_time > j.submit_time for j in result.jobs)
    # Strict FIFO: the second whole-cluster job waits for the first, the small one for both.
    assert by_name["big-1"].completion_time > by_name["big-0"].completion_time
    assert by_name["small"].completion_time > by_name["big-1"].completion_time
    assert max(used for _, used in result.gpus_in_use) == 64


class Flapper(BasePolicy):
    """Moves its single job between two nodes every round: every move is a restart."""

    name = "flapper"

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        node = cluster.nodes[int(now // 60) % 2].name
        return {j.id: Allocation({node: 1}, "aws") for j in jobs}


def test_reallocations_count_as_restarts_and_cost_their_delay(data_root: Path) -> None:
    cluster = load_cluster("pollux64")
    profiles = ProfileSet(data_root, "pollux")
    spec = TraceJob("moved", 0.0, "bert", 1, 12)
    steady = simulate(workload(spec), cluster, FifoPolicy(), profiles).jobs[0]
    moved = simulate(workload(spec), cluster, Flapper(), profiles).jobs[0]
    assert moved.restarts > 5
    assert moved.completion_time > steady.completion_time + 0.4 * 30 * moved.restarts


class Greedy(BasePolicy):
    name = "greedy"

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        return {j.id: Allocation({cluster.nodes[0].name: 5}, "aws") for j in jobs}


def test_a_policy_that_over_allocates_is_stopped(data_root: Path) -> None:
    with pytest.raises(ThriftyError, match="over-allocated node 'aws-0'"):
        simulate(
            workload(TraceJob("x", 0.0, "ncf", 1, 32768)),
            load_cluster("pollux64"),
            Greedy(),
            ProfileSet(data_root, "pollux"),
        )


class Stranger(Greedy):
    name = "stranger"

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        return {"nobody": Allocation({cluster.nodes[0].name: 1}, "aws")}


def test_a_policy_that_allocates_to_a_job_it_was_not_shown_is_stopped(data_root: Path) -> None:
    with pytest.raises(ThriftyError, match="policy stranger allocated GPUs to unknown or inactive "
                                           "job 'nobody'"):
        simulate(workload(TraceJob("x", 0.0, "ncf", 1, 32768)), load_cluster("pollux64"),
                 Stranger(), ProfileSet(data_root, "pollux"))


class Watcher(FifoPolicy):
    """FIFO that records whether each job had a model the first time it was shown."""

    adaptive = True  # jobs keep their own models (a rigid job's view carries none)

    def __init__(self, profiles_on_arrival: bool) -> None:
        super().__init__()
        self.profiles_on_arrival = profiles_on_arrival
        self.first: dict[str, bool] = {}

    def allocate(
        self, jobs: Sequence[JobView], cluster: ClusterView, now: float
    ) -> dict[str, Allocation]:
        for job in jobs:
            self.first.setdefault(job.id, job.model is not None)
        return super().allocate(jobs, cluster, now)


@pytest.mark.parametrize("on_arrival", [True, False])
def test_a_policy_that_profiles_on_arrival_sees_new_jobs_already_measured(
    data_root: Path, on_arrival: bool
) -> None:
    policy = Watcher(on_arrival)
    simulate(workload(TraceJob("x", 0.0, "cifar10", 1, 128)), load_cluster("sia-hetero64"),
             policy, ProfileSet(data_root, "sia"), SimSettings(max_hours=48))
    assert policy.first == {"x": on_arrival}


def test_summary_metrics_are_consistent(data_root: Path) -> None:
    cluster = load_cluster("sia-hetero64")
    profiles = ProfileSet(data_root, "sia")
    jobs = [TraceJob(f"j{i}", 30.0 * i, app, 2, 256) for i, app in
            enumerate(["cifar10", "deepspeech2", "ncf", "cifar10"])]
    jobs[2] = TraceJob("j2", 60.0, "ncf", 1, 32768)
    result = simulate(workload(*jobs), cluster, FifoPolicy(), profiles, SimSettings(interval_s=30))
    apps = {j.application: profiles.get(j.application, cluster.kinds) for j in jobs}
    summary = summarize(result, cluster, apps)
    jcts = sorted(j.completion_time - j.submit_time for j in result.jobs)
    assert summary.avg_jct_s == pytest.approx(sum(jcts) / 4)
    assert summary.p50_jct_s <= summary.p99_jct_s <= jcts[-1] + 1e-9
    assert summary.gpu_hours == pytest.approx(sum(summary.gpu_hours_by_kind.values()), rel=1e-3)
    assert summary.worst_ftf > 0
    assert summary.restarts_per_job == 0


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ThriftyError, match="interval"):
        SimSettings(interval_s=0)
    with pytest.raises(ThriftyError, match="restart delay"):
        SimSettings(restart_delay_s=-1)

"""The scheduler's steps one at a time: a real SQLite store, an in-memory executor, a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_executor import FakeExecutor
from sqlalchemy import select

from thrifty.cluster.scheduler import Scheduler, SchedulerConfig
from thrifty.cluster.schema import Attempt, Event, JobRow
from thrifty.cluster.spec import JobSpec, validate_spec
from thrifty.cluster.states import ACTIVE_STATES, QUEUED, RUNNING, SUCCEEDED
from thrifty.cluster.store import Store, keep_report
from thrifty.contract import Allocation, JobReport
from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.base import BasePolicy, ClusterView, JobView, NodeView
from thrifty.policy.oracle import ModelOracle

NODES = (NodeView("a0", "a100", 4), NodeView("a1", "a100", 4))
Answer = Callable[[Sequence[JobView], ClusterView], dict[str, Allocation]]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Scripted(BasePolicy):
    """A policy that answers what the test says and remembers what it was shown."""

    name = "scripted"
    adaptive = True

    def __init__(self, answer: Answer | None = None, needs_oracle: bool = False) -> None:
        self.answer = answer or (lambda jobs, cluster: {})
        self.needs_oracle = needs_oracle
        self.seen: list[tuple[list[JobView], ClusterView]] = []

    def allocate(self, jobs: Sequence[JobView], cluster: ClusterView,
                 now: float) -> dict[str, Allocation]:
        self.seen.append((list(jobs), cluster))
        return self.answer(jobs, cluster)


def spec(name: str, rigid: bool = False, **fields: Any) -> JobSpec:
    entry = {"command": ["sleep", "1"]} if rigid else {"script": "train.py"}
    resources = fields.pop("resources", {})
    return validate_spec({"name": name, "entrypoint": entry, "resources": resources,
                          "mode": "rigid" if rigid else "adaptive", **fields})


def model(explored: int = 2) -> GoodputModel:
    params = ThroughputParams(0.1, 0.01, 0.05, 0.01, 0.02, 0.01, 1.5)
    limits = BatchLimits(init_batch_size=128, max_batch_size=1024, min_local_bsz=32,
                         max_local_bsz=256)
    return GoodputModel(throughput={"a100": params}, grad=GradientStats(1.0, 10.0),
                        limits=limits, explored={"a100": explored})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'thrifty.db'}")
    yield store
    store.close()


def make(store: Store, tmp_path: Path, policy: Scripted | None = None,
         clock: Clock | None = None) -> tuple[Scheduler, FakeExecutor, Clock]:
    executor, clock = FakeExecutor(NODES), clock or Clock()
    config = SchedulerConfig(restart_s=7.0, retry_backoff_s=10.0, grace_s=1.0)
    scheduler = Scheduler(store, executor, policy or Scripted(), home=tmp_path, config=config,
                          clock=clock)
    return scheduler, executor, clock


def active(store: Store) -> list[JobRow]:
    with store.session() as s:
        return list(s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE_STATES))
                              .order_by(JobRow.submitted_at)))


def report(store: Store, job_id: str, at: float, explored: int = 2) -> None:
    with store.session() as s:
        keep_report(s, s.get(JobRow, job_id), JobReport(model(explored), job_id).to_dict(), at)


def events(store: Store, job_id: str) -> list[str]:
    with store.session() as s:
        return list(s.scalars(select(Event.kind).where(Event.job_id == job_id)
                              .order_by(Event.id)))


# ---- decide ------------------------------------------------------------------------------------

def test_decide_places_rigid_jobs_first_and_shows_the_policy_the_spec(store, tmp_path):
    def answer(jobs: Sequence[JobView], cluster: ClusterView) -> dict[str, Allocation]:
        roomy = max(cluster.nodes, key=lambda n: n.num_gpus)
        return {jobs[0].id: Allocation({roomy.name: 4}, "a100")}

    policy = Scripted(answer)
    scheduler, _, clock = make(store, tmp_path, policy)
    rigid = store.submit(spec("rigid", rigid=True, resources={"max_replicas": 3}), now=900.0)
    job = store.submit(spec("adapt", batch_size=512, deadline_s=3600.0, owner="ml/ann",
                            resources={"min_replicas": 1, "max_replicas": 8}), now=950.0)
    wanted = scheduler.decide(active(store), ClusterView(NODES), clock())
    assert wanted[rigid.id].num_replicas == 3
    (views, cluster), = policy.seen
    assert sorted(n.num_gpus for n in cluster.nodes) == [1, 4]  # what the rigid job left
    assert wanted[job.id].num_replicas == 4
    assert set(wanted[job.id].gpus).isdisjoint(wanted[rigid.id].gpus)
    (view,) = views
    assert (view.id, view.submit_time, view.owner, view.application) == (
        job.id, 950.0, "ml/ann", "adapt")
    assert view.deadline == 950.0 + 3600.0
    assert view.requested_batch_size == 512
    assert (view.min_replicas, view.max_replicas, view.replica_limit) == (1, 1, 8)
    assert view.requested_replicas == 8
    assert view.restart_s == 7.0
    assert view.model is None and view.oracle is None


def test_decide_trims_what_a_job_cannot_take(store, tmp_path):
    ids: dict[str, str] = {}

    def answer(jobs: Sequence[JobView], cluster: ClusterView) -> dict[str, Allocation]:
        return {
            "ghost": Allocation({"a0": 1}, "a100"),
            ids["t4-only"]: Allocation({"a0": 1}, "a100"),
            ids["small"]: Allocation({"a0": 2, "a1": 2}, "a100"),
            ids["floor"]: Allocation({"a1": 1}, "a100"),
        }

    scheduler, _, clock = make(store, tmp_path, Scripted(answer))
    ids["t4-only"] = store.submit(spec("t4-only", resources={"gpu_kinds": ["t4"]})).id
    ids["small"] = store.submit(spec("small", resources={"max_replicas": 3})).id
    ids["floor"] = store.submit(spec("floor", resources={"min_replicas": 2,
                                                         "max_replicas": 4})).id
    wanted = scheduler.decide(active(store), ClusterView(NODES), clock())
    assert wanted == {ids["small"]: Allocation({"a0": 2, "a1": 1}, "a100")}


def test_decide_parses_a_report_once_until_a_new_one_arrives(store, tmp_path):
    policy = Scripted()
    scheduler, _, clock = make(store, tmp_path, policy)
    jobs = [store.submit(spec(f"job{i}", resources={"max_replicas": 8})) for i in range(3)]
    for job in jobs:
        report(store, job.id, at=990.0)
    cluster = ClusterView(NODES)
    scheduler.decide(active(store), cluster, clock())
    assert scheduler.facts.parsed == 3
    scheduler.decide(active(store), cluster, clock())
    scheduler.decide(active(store), cluster, clock())
    assert scheduler.facts.parsed == 3  # nothing changed, nothing parsed
    report(store, jobs[1].id, at=995.0, explored=3)
    scheduler.decide(active(store), cluster, clock())
    assert scheduler.facts.parsed == 4
    views = {v.id: v for v in policy.seen[-1][0]}
    assert views[jobs[0].id].model == model(2)
    assert views[jobs[0].id].max_replicas == 4  # twice what it ran with
    assert views[jobs[1].id].max_replicas == 6
    assert all(v.oracle is None for v in views.values())


def test_a_policy_that_needs_an_oracle_gets_one_from_each_reported_model(store, tmp_path):
    policy = Scripted(needs_oracle=True)
    scheduler, _, clock = make(store, tmp_path, policy)
    known = store.submit(spec("known"))
    fresh = store.submit(spec("fresh"))
    report(store, known.id, at=990.0)
    scheduler.decide(active(store), ClusterView(NODES), clock())
    views = {v.id: v for v in policy.seen[-1][0]}
    assert isinstance(views[known.id].oracle, ModelOracle)
    assert views[known.id].oracle.model == model(2)
    assert views[fresh.id].oracle is None


def test_a_job_waiting_out_its_retry_back_off_is_not_placed(store, tmp_path):
    scheduler, _, clock = make(store, tmp_path)
    job = store.submit(spec("rigid", rigid=True))
    with store.session() as s:
        s.get(JobRow, job.id).retry_at = clock() + 5.0
    assert scheduler.decide(active(store), ClusterView(NODES), clock()) == {}
    clock.t += 5.0
    assert job.id in scheduler.decide(active(store), ClusterView(NODES), clock())


# ---- apply -------------------------------------------------------------------------------------

def test_apply_launches_resizes_and_preempts(store, tmp_path):
    scheduler, executor, clock = make(store, tmp_path)
    job = store.submit(spec("adapt", resources={"max_replicas": 8}))
    two = Allocation({"a0": 2}, "a100")
    assert scheduler.apply(active(store), {job.id: two}, clock()) == (0, 1)
    row = store.get(job.id)
    assert row.state == RUNNING and Allocation.from_dict(row.allocation) == two
    (launch,) = executor.launches
    assert (launch.attempt, launch.allocation) == (1, two)
    assert launch.env["THRIFTY_JOB_ID"] == job.id
    # The same allocation again changes nothing.
    assert scheduler.apply(active(store), {job.id: two}, clock()) == (0, 0)
    # A different one is a checkpoint-restart onto it.
    clock.t += 30.0
    four = Allocation({"a0": 2, "a1": 2}, "a100")
    assert scheduler.apply(active(store), {job.id: four}, clock()) == (1, 1)
    assert executor.stopped == [f"{job.id}/1"]
    row = store.get(job.id)
    assert (row.restarts, Allocation.from_dict(row.allocation)) == (1, four)
    with store.session() as s:
        attempts = list(s.scalars(select(Attempt).where(Attempt.job_id == job.id)
                                  .order_by(Attempt.number)))
        assert [(a.number, a.outcome, a.ended_at) for a in attempts] == [
            (1, "stopped", clock()), (2, None, None)]
    # Nothing for it: back to the queue.
    assert scheduler.apply(active(store), {}, clock()) == (1, 0)
    row = store.get(job.id)
    assert (row.state, row.allocation, row.restarts) == (QUEUED, None, 2)
    assert events(store, job.id)[-2:] == ["preempted", "requeued"]


def test_a_launch_that_fails_is_the_jobs_failure(store, tmp_path):
    scheduler, executor, clock = make(store, tmp_path)
    job = store.submit(spec("broken", rigid=True))
    executor.fail_launch.add(job.id)
    assert scheduler.apply(active(store), {job.id: Allocation({"a0": 1}, "a100")},
                           clock()) == (0, 0)
    row = store.get(job.id)
    assert (row.state, row.failures) == (QUEUED, 1)
    assert row.retry_at == clock() + 10.0
    assert "launch failed" in row.message


# ---- collect -----------------------------------------------------------------------------------

def test_collect_accounts_service_takes_reports_and_settles(store, tmp_path):
    scheduler, executor, clock = make(store, tmp_path)
    ok = store.submit(spec("ok", resources={"max_replicas": 4}))
    bad = store.submit(spec("bad", max_restarts=1))
    scheduler.apply(active(store), {ok.id: Allocation({"a0": 2}, "a100"),
                                    bad.id: Allocation({"a1": 1}, "a100")}, clock())
    executor.reports[ok.id] = JobReport(model(2), ok.id, step=10).to_dict()
    clock.t += 10.0
    assert scheduler.collect(clock(), 10.0) == 0
    row = store.get(ok.id)
    assert row.attained_service == pytest.approx(20.0)
    assert JobReport.from_dict(row.report).step == 10 and row.reported_at == clock()
    executor.finish(ok.id, 0)
    executor.finish(bad.id, 1)
    assert scheduler.collect(clock(), 0.0) == 2
    assert store.get(ok.id).state == SUCCEEDED
    row = store.get(bad.id)
    assert (row.state, row.failures, row.retry_at) == (QUEUED, 1, clock() + 10.0)
    # A second failure is past max_restarts.
    clock.t += 10.0
    scheduler.apply(active(store), {bad.id: Allocation({"a1": 1}, "a100")}, clock())
    executor.finish(bad.id, 1)
    scheduler.collect(clock(), 0.0)
    row = store.get(bad.id)
    assert row.state == "failed" and "failed 2 time(s)" in row.message


# ---- recover -----------------------------------------------------------------------------------

def test_recover_adopts_what_still_runs_and_requeues_what_is_gone(store, tmp_path):
    scheduler, executor, clock = make(store, tmp_path)
    alive = store.submit(spec("alive"))
    gone = store.submit(spec("gone"))
    scheduler.apply(active(store), {alive.id: Allocation({"a0": 1}, "a100"),
                                    gone.id: Allocation({"a1": 1}, "a100")}, clock())
    del executor.codes[f"{gone.id}/1"]  # its processes died with the old control plane
    clock.t += 60.0
    restarted = Scheduler(store, executor, Scripted(), home=tmp_path, clock=clock)
    restarted.recover()
    assert store.get(alive.id).state == RUNNING
    assert events(store, alive.id)[-1] == "adopted"
    row = store.get(gone.id)
    assert (row.state, row.allocation) == (QUEUED, None)
    with store.session() as s:
        attempt = s.scalar(select(Attempt).where(Attempt.job_id == gone.id))
        assert (attempt.outcome, attempt.ended_at) == ("lost", clock())


# ---- a whole round -----------------------------------------------------------------------------

def test_a_round_runs_the_steps_on_the_injected_clock(store, tmp_path):
    policy = Scripted(lambda jobs, cluster: {j.id: Allocation({"a0": 1}, "a100") for j in jobs})
    scheduler, executor, clock = make(store, tmp_path, policy)
    job = store.submit(spec("adapt"), now=clock())
    first = scheduler.round()
    assert (first.started, first.stopped, first.finished) == (1, 0, 0)
    clock.t += 15.0
    scheduler.round()
    assert store.get(job.id).attained_service == pytest.approx(15.0)
    executor.finish(job.id, 0)
    clock.t += 5.0
    last = scheduler.round()
    assert last.finished == 1 and store.get(job.id).state == SUCCEEDED


def test_config_names_every_duration_in_seconds():
    config = SchedulerConfig(restart_s=1.0, retry_backoff_s=2.0, grace_s=3.0)
    assert (config.restart_s, config.retry_backoff_s, config.grace_s) == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="grace_s"):
        SchedulerConfig(grace_s=-1.0)

"""Control-plane overheads on this machine: API listing latency and one scheduling round's time.

(1) GET /jobs against a real uvicorn server (a thread of this process, on loopback) over a SQLite
    store holding --jobs jobs (default 1,000: --adaptive-listed running adaptive jobs with real
    GoodputModel reports, whose goodput each listing computes, the rest finished). Latency p50/p99
    over --requests sequential requests on one keep-alive connection, for the default page (100
    newest), limit=1000, and state=running.
(2) Scheduler.round() with the local executor: --running rigid jobs sleeping for an hour on as
    many CPU slots, plus --adaptive adaptive jobs (also sleeping, one slot each) whose report files
    hold a synthetic GoodputModel, so that the policy has real work. After the round that launches
    them, --rounds steady-state rounds: median and p95 round time, the policy's share, and how
    many reports were parsed and goodput-table rows computed per round (both 0 when nothing
    changed: reports are parsed once per (job, reported-at), rows cached by the model's value).

Run:  python benchmarks/control_plane.py [--jobs 1000 --requests 200 --running 100 --adaptive 20
                                         --rounds 20 --policy thrifty]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from thrifty.cluster.api import ApiServer, create_app
from thrifty.cluster.local import LocalExecutor
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import JobRow
from thrifty.cluster.spec import validate_spec
from thrifty.cluster.states import RUNNING, SUCCEEDED
from thrifty.cluster.store import Store
from thrifty.contract import JobReport
from thrifty.goodput import BatchLimits, GoodputModel, GradientStats, ThroughputParams
from thrifty.policy.configs import ConfigPolicy
from thrifty.settings import Settings

# Fitted on one CPU replica of examples/digits_mlp.py (step time in seconds, seconds per sample).
MODEL = GoodputModel(
    throughput={"cpu": ThroughputParams(3.55e-3, 2.99e-6, 1e-8, 1e-8, 1.1e-8, 1.1e-8, 1.001)},
    grad=GradientStats(sqr=4.39e-4, var=5.24e-3),
    limits=BatchLimits(init_batch_size=32, max_batch_size=512),
    explored={"cpu": 1},
    progress=500.0,
    target_progress=1875.0,
)


def report(job_id: str, batch_size: int = 128) -> dict[str, Any]:
    """What thrifty.train publishes: a JobReport as JSON."""
    return JobReport(model=MODEL, job_id=job_id, step=100, epoch=3,
                     batch_size=batch_size).to_dict()


def open_store(home: Path, name: str) -> tuple[Settings, Store]:
    """Settings for a throwaway server home, and the store they name."""
    settings = Settings(home=home, db_url=f"sqlite:///{home / name}")
    return settings, Store(settings.database_url())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---- (1) listing latency -------------------------------------------------------------------------


def fill_store(store: Store, jobs: int, running: int) -> None:
    spec = validate_spec({"name": "listed", "entrypoint": {"script": "train.py"},
                          "owner": "admin"})
    ids = [store.submit(spec).id for _ in range(jobs)]
    now = time.time()
    with store.session() as s:
        for i, job_id in enumerate(ids):
            row = s.get(JobRow, job_id)
            row.started_at = row.submitted_at + 1
            if i < running:
                row.state, row.allocation = RUNNING, {"gpus": {"local": 1}, "kind": "cpu"}
                row.report, row.reported_at = report(job_id), now
            else:
                row.state, row.finished_at = SUCCEEDED, row.submitted_at + 60


def time_requests(http: httpx.Client, params: dict[str, Any], count: int) -> dict[str, float]:
    http.get("/jobs", params=params).raise_for_status()  # warm: connection, caches
    times, size, listed = [], 0, 0
    for _ in range(count):
        start = time.perf_counter()
        response = http.get("/jobs", params=params)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        size, listed = len(response.content), len(response.json()["jobs"])
    return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3,
            "mean_ms": statistics.fmean(times) * 1e3, "jobs": listed, "kib": size / 1024}


def listing(home: Path, jobs: int, running: int, requests: int) -> list[tuple[str, dict]]:
    settings, store = open_store(home, "listing.db")
    token = store.add_user("admin", admin=True)
    fill_store(store, jobs, running)
    plane = ControlPlane(store, LocalExecutor(slots=running, isolation="none"), "thrifty",
                         home=settings.home)
    rows = []
    try:
        with ApiServer(create_app(plane)) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http:
            for label, params in (("default page (100)", {}), ("limit=1000", {"limit": 1000}),
                                  (f"state=running ({running})", {"state": "running"})):
                rows.append((label, time_requests(http, params, requests)))
    finally:
        plane.stop()
        store.close()
    return rows


# ---- (2) one scheduling round --------------------------------------------------------------------


def rows_built(plane: ControlPlane) -> int:
    """Goodput-table rows the policy has computed (0 for policies without such a table)."""
    return plane.policy.rows_built if isinstance(plane.policy, ConfigPolicy) else 0


def scheduling(home: Path, running: int, adaptive: int, rounds: int,
               policy: str) -> dict[str, Any]:
    settings, store = open_store(home, "rounds.db")
    plane = ControlPlane(store, LocalExecutor(slots=running + adaptive, isolation="none"), policy,
                         home=settings.home, stop_grace_s=5.0)
    sleeper = home / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(3600)\n")
    try:
        for i in range(running):
            plane.submit(validate_spec({
                "name": f"rigid-{i}", "mode": "rigid", "owner": "bench",
                "entrypoint": {"command": ["sleep", "3600"]},
            }))
        adaptive_ids = [plane.submit(validate_spec({
            "name": f"adaptive-{i}", "owner": "bench", "entrypoint": {"script": str(sleeper)},
            "resources": {"min_replicas": 1, "max_replicas": 1},
        })).id for i in range(adaptive)]
        start = time.perf_counter()
        first = plane.run_round()
        launch_s = time.perf_counter() - start
        for job_id in adaptive_ids:  # as thrifty.train writes it: atomically, beside the logs
            path = plane.scheduler.job_dir(job_id) / "report.json"
            path.with_suffix(".tmp").write_text(json.dumps(report(job_id)))
            path.with_suffix(".tmp").replace(path)
        plane.run_round()  # takes the reports in
        parsed, built = plane.scheduler.facts.parsed, rows_built(plane)
        stats = [plane.run_round() for _ in range(rounds)]
        totals = [s.total_s for s in stats]
        policies = [s.policy_s for s in stats]
        return {
            "launched": first.started, "launch_round_s": launch_s,
            "median_ms": statistics.median(totals) * 1e3, "p95_ms": percentile(totals, 95) * 1e3,
            "policy_median_ms": statistics.median(policies) * 1e3,
            "policy_share": statistics.median(p / t for p, t in zip(policies, totals,
                                                                       strict=True)),
            "changes": sum(s.started + s.stopped for s in stats),
            "parsed": (plane.scheduler.facts.parsed - parsed) / rounds,
            "built": (rows_built(plane) - built) / rounds,
            "running": len(store.jobs(states=[RUNNING])),
        }
    finally:
        plane.stop(stop_jobs=True)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in the store for (1)")
    parser.add_argument("--adaptive-listed", type=int, default=100,
                        help="of those, running adaptive jobs with reports")
    parser.add_argument("--requests", type=int, default=200, help="requests per variant")
    parser.add_argument("--running", type=int, default=100, help="rigid jobs running in (2)")
    parser.add_argument("--adaptive", type=int, default=20,
                        help="adaptive jobs with reports running in (2)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds timed in (2)")
    parser.add_argument("--policy", default="thrifty")
    args = parser.parse_args()
    if min(args.jobs, args.requests, args.rounds, args.running + args.adaptive) < 1:
        parser.error("--jobs, --requests, --rounds and --running + --adaptive must be positive")
    with tempfile.TemporaryDirectory(prefix="thrifty-bench-") as folder:
        home = Path(folder)
        rows = listing(home, args.jobs, min(args.adaptive_listed, args.jobs), args.requests)
        print(f"(1) GET /jobs, {args.jobs} jobs in SQLite, {args.requests} requests each, "
              "real uvicorn on loopback")
        print(f"{'':24s}{'p50 ms':>9s}{'p99 ms':>9s}{'mean ms':>9s}{'jobs':>7s}{'KiB':>8s}")
        for label, r in rows:
            print(f"{label:24s}{r['p50_ms']:9.1f}{r['p99_ms']:9.1f}{r['mean_ms']:9.1f}"
                  f"{r['jobs']:7d}{r['kib']:8.0f}")
        result = scheduling(home, args.running, args.adaptive, args.rounds, args.policy)
    print()
    print(f"(2) Scheduler.round(), local executor, {args.running} rigid + {args.adaptive} "
          f"adaptive jobs running, policy {args.policy}, {args.rounds} rounds")
    print(f"launch round ({result['launched']} jobs started)  {result['launch_round_s']:8.2f} s")
    print(f"round time median                  {result['median_ms']:8.1f} ms")
    print(f"round time p95                     {result['p95_ms']:8.1f} ms")
    print(f"policy time median                 {result['policy_median_ms']:8.1f} ms")
    print(f"policy share of a round (median)   {result['policy_share']:8.1%}")
    print(f"starts + stops in timed rounds     {result['changes']:8d}")
    print(f"reports parsed per round           {result['parsed']:8.1f}")
    print(f"goodput-table rows built per round {result['built']:8.1f}")
    if result["running"] != args.running + args.adaptive:
        print(f"error: {result['running']} jobs running, expected "
              f"{args.running + args.adaptive}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

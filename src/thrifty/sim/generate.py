"""Larger clusters and workloads sampled from measured ones, to compare policies at scale.

The measured workloads are 160 jobs over 8 hours on 64 GPUs. To ask how a policy behaves on
2,048 GPUs with thousands of jobs, we keep everything that was measured and scale only what a
bigger cluster changes:

- the cluster: every node group of the base cluster × a node scale factor, with the base's
  profiles kind and per-application settings (restart delays, slowdowns, per-GPU batch caps), so
  the scaled `sia-hetero64` is still simulated the way Sia's simulator does it;
- the workload: each job's (application, requested GPUs, requested batch size) drawn jointly from
  the pooled base jobs, so the mix and the request distribution (and their correlation) carry
  over; inter-arrival gaps drawn from the pooled base gaps and divided by the arrival-rate scale,
  so the mean rate scales exactly while the burstiness (coefficient of variation) is kept.

Sampling is a bootstrap with numpy's seeded generator: the same inputs and seed give the same
files on every machine. The time-of-day shape of the base trace is not kept (gaps are drawn
independently); the traces span only 8 busy hours, so there is little shape to keep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thrifty.errors import ThriftyError
from thrifty.sim.cluster import ClusterSpec, NodeSpec
from thrifty.sim.workload import COLUMNS, OWNER_COLUMNS, TraceJob, Workload

TIME_DECIMALS = 3  # submit times are kept to the millisecond, in memory and in the CSV
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str = "--duration") -> float:
    """Seconds from `"28800"`, `"480m"`, `"8h"` or `"1.5d"`: users think in hours, files in s.
    `option` is the flag the text came from, so that the error names it."""
    match = _DURATION.match(text)
    if not match:
        raise ThriftyError(
            f"{option}: {text!r} is not a duration; use seconds or a unit: 28800, 480m, 8h, 1d"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ThriftyError(f"{option} must be positive, got {text!r}")
    return seconds


# --------------------------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one shape, the unit a cluster TOML describes (`[[nodes]]`)."""

    kind: str
    count: int
    gpus: int
    price_per_hour: float


def node_groups(cluster: ClusterSpec) -> list[NodeGroup]:
    """Consecutive nodes of the same kind, GPU count and price, merged into groups."""
    groups: list[NodeGroup] = []
    for node in cluster.nodes:
        last = groups[-1] if groups else None
        if last and (last.kind, last.gpus, last.price_per_hour) == (
            node.gpu_kind, node.num_gpus, node.price_per_hour
        ):
            groups[-1] = NodeGroup(last.kind, last.count + 1, last.gpus, last.price_per_hour)
        else:
            groups.append(NodeGroup(node.gpu_kind, 1, node.num_gpus, node.price_per_hour))
    return groups


def scale_cluster(cluster: ClusterSpec, node_scale: float, name: str | None = None) -> ClusterSpec:
    """Every node group × `node_scale` (rounded, at least one node); all settings kept.

    Node names follow the loader's scheme (`<kind>-<i>` per kind), so that the scaled cluster
    equals what `load_cluster` reads back from `cluster_toml` of it.
    """
    if not node_scale > 0:
        raise ThriftyError(f"--node-scale must be positive, got {node_scale}")
    nodes: list[NodeSpec] = []
    per_kind: dict[str, int] = {}
    for group in node_groups(cluster):
        count = max(1, round(group.count * node_scale))
        start = per_kind.get(group.kind, 0)
        nodes.extend(
            NodeSpec(f"{group.kind}-{start + i}", group.kind, group.gpus, group.price_per_hour)
            for i in range(count)
        )
        per_kind[group.kind] = start + count
    return ClusterSpec(
        name=name or f"{cluster.name}x{node_scale:g}",
        nodes=tuple(nodes),
        profiles=cluster.profiles,
        restart_delay=dict(cluster.restart_delay),
        slowdown=dict(cluster.slowdown),
        local_bsz_caps={app: dict(caps) for app, caps in cluster.local_bsz_caps.items()},
    )


def _key(text: str) -> str:
    """A TOML key: quoted always, since `*` (the default entry) is not a bare key."""
    return json.dumps(text)


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"


def _table(name: str, values: Mapping[str, float], integer: bool = False) -> list[str]:
    if not values:
        return []
    lines = ["", f"[{name}]"]
    for key, value in values.items():
        text = str(int(value)) if integer else _number(value)
        lines.append(f"{_key(key)} = {text}")
    return lines


def cluster_toml(cluster: ClusterSpec, comment: str = "") -> str:
    """The TOML text `load_cluster` reads back into an equal `ClusterSpec`."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"name = {json.dumps(cluster.name)}", f"profiles = {json.dumps(cluster.profiles)}"]
    lines += _table("restart_delay", cluster.restart_delay)
    lines += _table("slowdown", cluster.slowdown)
    for app, caps in cluster.local_bsz_caps.items():
        lines += _table(f"local_bsz_caps.{_key(app)}", caps, integer=True)
    for group in node_groups(cluster):
        lines += [
            "",
            "[[nodes]]",
            f"kind = {json.dumps(group.kind)}",
            f"count = {group.count}",
            f"gpus = {group.gpus}",
            f"price_per_hour = {_number(group.price_per_hour)}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseStats:
    """What the generator resamples from: the pooled jobs and gaps of the base workloads."""

    requests: tuple[TraceJob, ...]  # every base job: its application, request and owner
    gaps: np.ndarray  # seconds between consecutive arrivals, within each base workload
    span: float  # seconds from the start to the last arrival, longest of the bases

    @property
    def mean_gap(self) -> float:
        return float(self.gaps.mean())


def base_stats(bases: Sequence[Workload]) -> BaseStats:
    """Pool the base workloads; gaps are taken within each file, never across two of them."""
    if not bases:
        raise ThriftyError("no base workload given: pass one or more CSV files or folders")
    requests: list[TraceJob] = []
    gaps: list[np.ndarray] = []
    for workload in bases:
        times = np.sort([j.submit_time for j in workload.jobs])
        gaps.append(np.diff(times))
        requests.extend(workload.jobs)
    pooled = np.concatenate(gaps)
    if pooled.size == 0 or not pooled.sum() > 0:
        names = ", ".join(str(w.path) for w in bases)
        raise ThriftyError(
            f"{names}: base workloads need at least two distinct arrival times to sample "
            "inter-arrival gaps from"
        )
    span = max(max(j.submit_time for j in w.jobs) for w in bases)
    return BaseStats(tuple(requests), pooled, float(span))


def generate_workload(
    bases: Sequence[Workload],
    *,
    rate_scale: float = 1.0,
    duration: float | None = None,
    jobs: int | None = None,
    seed: int = 0,
    name: str = "generated",
) -> Workload:
    """A workload resampled from `bases`, arriving `rate_scale` times as fast.

    It ends at `jobs` jobs, or with the last arrival before `duration` seconds; with neither,
    it spans as long as the longest base (so × 32 the rate gives about × 32 the jobs).
    """
    if not rate_scale > 0:
        raise ThriftyError(f"--rate-scale must be positive, got {rate_scale}")
    if jobs is not None and duration is not None:
        raise ThriftyError("give either --jobs or --duration, not both")
    if jobs is not None and jobs < 1:
        raise ThriftyError(f"--jobs must be at least 1, got {jobs}")
    if duration is not None and not duration > 0:
        raise ThriftyError(f"--duration must be positive, got {duration}")
    stats = base_stats(bases)
    horizon = stats.span if jobs is None and duration is None else duration
    rng = np.random.default_rng(seed)
    times = _arrivals(rng, stats.gaps / rate_scale, jobs, horizon)
    picks = rng.integers(len(stats.requests), size=len(times))
    specs = []
    for i, (t, pick) in enumerate(zip(times, picks, strict=True)):
        job = stats.requests[pick]  # owner too: a team's jobs keep their share of the mix
        specs.append(TraceJob(f"{job.application}-{i}", float(t), job.application,
                             job.num_replicas, job.batch_size, job.user, job.team))
    return Workload(name=name, path=Path(f"{name}.csv"), jobs=tuple(specs))


def _arrivals(
    rng: np.random.Generator, gaps: np.ndarray, jobs: int | None, horizon: float | None
) -> np.ndarray:
    """Arrival times from bootstrapped gaps: `jobs` of them, or all up to `horizon` seconds.

    Drawn in batches sized from the mean gap, so a long horizon costs a few numpy calls.
    """
    if jobs is not None:
        times = np.cumsum(rng.choice(gaps, size=jobs))
    else:
        assert horizon is not None
        chunks: list[np.ndarray] = []
        last = 0.0
        batch = int(horizon / max(float(gaps.mean()), 1e-9) * 1.1) + 16
        while last <= horizon:
            chunk = last + np.cumsum(rng.choice(gaps, size=batch))
            chunks.append(chunk)
            last = float(chunk[-1])
        times = np.concatenate(chunks)
        times = times[times <= horizon]
    return np.round(times, TIME_DECIMALS)


def workload_csv(workload: Workload) -> str:
    """The workload as `load_workload` reads it (times to the millisecond, trailing zeros cut)."""
    owned = any(job.user or job.team for job in workload.jobs)
    lines = [",".join(COLUMNS + (OWNER_COLUMNS if owned else ()))]
    for job in workload.jobs:
        time = f"{job.submit_time:.{TIME_DECIMALS}f}".rstrip("0").rstrip(".")
        row = f"{job.name},{time},{job.application},{job.num_replicas},{job.batch_size}"
        lines.append(f"{row},{job.user},{job.team}" if owned else row)
    return "\n".join(lines) + "\n"


def mix(workload: Workload) -> dict[str, float]:
    """Share of the jobs per application, for reports and checks."""
    counts: dict[str, int] = {}
    for job in workload.jobs:
        counts[job.application] = counts.get(job.application, 0) + 1
    return {app: n / len(workload.jobs) for app, n in sorted(counts.items())}


def _gap_stats(times: Sequence[float]) -> tuple[float, float]:
    """Mean inter-arrival gap (s) and its coefficient of variation."""
    gaps = np.diff(np.sort(np.asarray(times, dtype=float)))
    if gaps.size == 0 or gaps.mean() <= 0:
        return float("nan"), float("nan")
    return float(gaps.mean()), float(gaps.std() / gaps.mean())


def comparison(
    bases: Sequence[Workload], base: ClusterSpec, generated: Workload, scaled: ClusterSpec
) -> list[tuple[str, str, str]]:
    """(figure, base, generated) rows that show at a glance what was kept and what scaled."""
    stats = base_stats(bases)
    base_gap = float(stats.mean_gap)
    base_cv = float(stats.gaps.std() / stats.gaps.mean())
    gap, cv = _gap_stats([j.submit_time for j in generated.jobs])
    pooled = Workload("bases", Path("bases.csv"), tuple(j for b in bases for j in b.jobs))
    base_mix, new_mix = mix(pooled), mix(generated)
    rows = [
        ("GPUs (nodes)", f"{base.num_gpus} ({len(base.nodes)})",
         f"{scaled.num_gpus} ({len(scaled.nodes)})"),
        ("jobs", f"{len(pooled.jobs)} in {len(bases)} file(s)", str(len(generated.jobs))),
        ("mean gap s", f"{base_gap:.2f}", f"{gap:.2f}"),
        ("gap CV", f"{base_cv:.2f}", f"{cv:.2f}"),
        ("last arrival h", f"{stats.span / 3600:.2f}",
         f"{max(j.submit_time for j in generated.jobs) / 3600:.2f}"),
    ]
    for app in sorted(set(base_mix) | set(new_mix)):
        rows.append((f"{app} share", f"{base_mix.get(app, 0):.1%}", f"{new_mix.get(app, 0):.1%}"))
    return rows

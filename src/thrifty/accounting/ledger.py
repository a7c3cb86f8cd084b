"""The ledger: who used what, and what it cost in dollars, kWh and kg CO2e.

It is built from usage segments — a job holding `gpus` GPUs of one kind from `start_s` to `end_s`
at a price — which a metering scheduler records as it grants allocations. Everything allocated is
billed, including what the job did not turn into progress:

- restart overhead: GPU time spent restoring a checkpoint after each (re)allocation;
- idle allocated capacity: GPUs held but not training (the tail of a scheduling interval after a
  job finished, a configuration that cannot run);
- queueing: seconds from submission to the first allocation (no money, but time).

Owners are `team/user` paths (`"vision/alice"`); an owner without a slash is its own team.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from thrifty.accounting.carbon import CarbonIntensity, kg_co2e
from thrifty.accounting.energy import EnergySource, PowerModel, job_energy
from thrifty.errors import ThriftyError

GroupBy = Literal["job", "user", "team"]


def split_owner(owner: str) -> tuple[str, str]:
    """(team, user) of an owner path; `""` is the unowned team `-`."""
    owner = owner.strip()
    if not owner:
        return "-", "-"
    team, _, user = owner.partition("/")
    return team, (user or team)


def owner_path(team: str, user: str) -> str:
    if not team and not user:
        return ""
    return f"{team or user}/{user or team}"


@dataclass(frozen=True)
class UsageSegment:
    """One job holding GPUs of one kind for a span of time, at `usd_per_hour` for all of them.
    `restart_s` is the part at its start spent restoring a checkpoint."""

    job: str
    owner: str
    kind: str
    gpus: int
    start_s: float
    end_s: float
    usd_per_hour: float
    restart_s: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.end_s - self.start_s, 0.0)

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.seconds

    @property
    def usd(self) -> float:
        return self.usd_per_hour * self.seconds / 3600.0


@dataclass(frozen=True)
class JobFacts:
    """What the scheduler knows of a job besides its segments. `used_gpu_seconds` (by kind) is
    the time it actually ran, restarts included; None means all allocated time was used."""

    job: str
    owner: str
    submit_s: float
    application: str = ""
    completion_s: float | None = None
    restarts: int = 0
    used_gpu_seconds: Mapping[str, float] | None = None
    measured_kwh: float | None = None


@dataclass(frozen=True)
class LedgerEntry:
    job: str
    team: str
    user: str
    application: str
    submit_s: float
    start_s: float | None
    end_s: float | None
    queue_s: float
    restarts: int
    gpu_hours_by_kind: dict[str, float]  # allocated (billed)
    gpu_hours: float
    used_gpu_hours: float
    restart_gpu_hours: float
    idle_gpu_hours: float
    usd: float
    restart_usd: float
    idle_usd: float
    kwh: float
    energy_source: EnergySource
    kgco2e: float


@dataclass(frozen=True)
class LedgerLine:
    """One usage segment with its money, energy and CO2: what `--since` and plots slice."""

    job: str
    team: str
    user: str
    kind: str
    gpus: int
    start_s: float
    end_s: float
    usd: float
    kwh: float
    kgco2e: float


@dataclass
class Ledger:
    entries: list[LedgerEntry]
    lines: list[LedgerLine]
    meta: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        return {
            "gpu_hours": math.fsum(e.gpu_hours for e in self.entries),
            "used_gpu_hours": math.fsum(e.used_gpu_hours for e in self.entries),
            "usd": math.fsum(e.usd for e in self.entries),
            "kwh": math.fsum(e.kwh for e in self.entries),
            "kgco2e": math.fsum(e.kgco2e for e in self.entries),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": dict(self.meta),
            "entries": [asdict(e) for e in self.entries],
            "lines": [asdict(x) for x in self.lines],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        try:
            return cls(
                entries=[LedgerEntry(**e) for e in data["entries"]],
                lines=[LedgerLine(**x) for x in data["lines"]],
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError) as err:
            raise ThriftyError(f"not a thrifty ledger: {err}") from None


def build_ledger(
    segments: Iterable[UsageSegment],
    facts: Iterable[JobFacts],
    power: PowerModel,
    intensity: CarbonIntensity,
    meta: Mapping[str, Any] | None = None,
) -> Ledger:
    """Price, power and carbon every job's segments; a job with no segment still gets an entry.

    Energy splits a job's allocated GPU time into used (busy power) and idle (idle power) per
    kind; a measured figure replaces the whole. Each segment carries its share of the job's
    energy by GPU-seconds, and its CO2 at the grid's mean intensity during that segment.
    """
    by_job: dict[str, list[UsageSegment]] = {}
    for seg in segments:
        by_job.setdefault(seg.job, []).append(seg)
    entries: list[LedgerEntry] = []
    lines: list[LedgerLine] = []
    for fact in facts:
        segs = sorted(by_job.pop(fact.job, []), key=lambda s: s.start_s)
        team, user = split_owner(fact.owner)
        alloc: dict[str, float] = {}
        for s in segs:
            alloc[s.kind] = alloc.get(s.kind, 0.0) + s.gpu_seconds
        used = dict(alloc) if fact.used_gpu_seconds is None else dict(fact.used_gpu_seconds)
        busy = {k: min(used.get(k, 0.0), v) for k, v in alloc.items()}
        idle = {k: v - busy[k] for k, v in alloc.items()}
        modelled = math.fsum(power.kwh(k, busy[k], idle[k]) for k in alloc)
        energy = job_energy(modelled, fact.measured_kwh)
        total_gpu_s = math.fsum(alloc.values())
        restart_gpu_s = math.fsum(min(s.restart_s, s.seconds) * s.gpus for s in segs)
        restart_usd = math.fsum(
            s.usd * min(s.restart_s, s.seconds) / s.seconds for s in segs if s.seconds > 0
        )
        usd = math.fsum(s.usd for s in segs)
        idle_gpu_s = math.fsum(idle.values())
        # Idle GPUs are billed at the job's mean price per GPU-second.
        idle_usd = usd * idle_gpu_s / total_gpu_s if total_gpu_s > 0 else 0.0
        kg_total = 0.0
        for s in segs:
            share = s.gpu_seconds / total_gpu_s if total_gpu_s > 0 else 0.0
            kwh = energy.kwh * share
            kg = kg_co2e(kwh, intensity.mean_g_per_kwh(s.start_s, s.end_s))
            kg_total += kg
            lines.append(LedgerLine(fact.job, team, user, s.kind, s.gpus, s.start_s, s.end_s,
                                    s.usd, kwh, kg))
        start = segs[0].start_s if segs else None
        entries.append(LedgerEntry(
            job=fact.job,
            team=team,
            user=user,
            application=fact.application,
            submit_s=fact.submit_s,
            start_s=start,
            end_s=fact.completion_s if fact.completion_s is not None else (
                segs[-1].end_s if segs else None
            ),
            queue_s=(start - fact.submit_s) if start is not None else 0.0,
            restarts=fact.restarts,
            gpu_hours_by_kind={k: v / 3600 for k, v in sorted(alloc.items())},
            gpu_hours=total_gpu_s / 3600,
            used_gpu_hours=math.fsum(used.values()) / 3600,
            restart_gpu_hours=restart_gpu_s / 3600,
            idle_gpu_hours=idle_gpu_s / 3600,
            usd=usd,
            restart_usd=restart_usd,
            idle_usd=idle_usd,
            kwh=energy.kwh,
            energy_source=energy.source,
            kgco2e=kg_total,
        ))
    if by_job:
        raise ThriftyError(
            f"usage recorded for job(s) the ledger was not told about: {', '.join(sorted(by_job))}"
        )
    return Ledger(entries, lines, dict(meta or {}))


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

REPORT_FIELDS = ("gpu_hours", "usd", "kwh", "kgco2e")


@dataclass(frozen=True)
class SpendRow:
    key: str
    jobs: int
    gpu_hours_by_kind: dict[str, float]
    gpu_hours: float
    usd: float
    kwh: float
    kgco2e: float
    restart_gpu_hours: float
    idle_gpu_hours: float
    queue_h: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(by: GroupBy, job: str, team: str, user: str) -> str:
    return {"job": job, "user": f"{team}/{user}", "team": team}[by]


def report(ledger: Ledger, by: GroupBy, since_s: float | None = None) -> list[SpendRow]:
    """Totals per job, user or team; with `since_s`, only usage after it (segments are cut)."""
    if by not in ("job", "user", "team"):
        raise ThriftyError(f"cannot group by '{by}': use job, user or team")
    acc: dict[str, dict[str, Any]] = {}

    def slot(key: str) -> dict[str, Any]:
        return acc.setdefault(key, {"jobs": set(), "kinds": {}, "gpu_s": 0.0, "usd": 0.0,
                                    "kwh": 0.0, "kg": 0.0, "restart": 0.0, "idle": 0.0,
                                    "queue": 0.0})

    for line in ledger.lines:
        start = line.start_s if since_s is None else max(line.start_s, since_s)
        if line.end_s <= start:
            continue
        span = line.end_s - line.start_s
        part = (line.end_s - start) / span if span > 0 else 1.0
        s = slot(_key(by, line.job, line.team, line.user))
        s["jobs"].add(line.job)
        gpu_s = line.gpus * (line.end_s - start)
        s["kinds"][line.kind] = s["kinds"].get(line.kind, 0.0) + gpu_s
        s["gpu_s"] += gpu_s
        s["usd"] += line.usd * part
        s["kwh"] += line.kwh * part
        s["kg"] += line.kgco2e * part
    for e in ledger.entries:
        key = _key(by, e.job, e.team, e.user)
        if since_s is not None and (e.end_s is None or e.end_s <= since_s) and key not in acc:
            continue
        s = slot(key)
        s["jobs"].add(e.job)
        whole = since_s is None or (e.start_s is not None and e.start_s >= since_s)
        if whole:  # overheads are per job: counted where the whole job is in the window
            s["restart"] += e.restart_gpu_hours
            s["idle"] += e.idle_gpu_hours
            s["queue"] += e.queue_s / 3600
    return [
        SpendRow(key, len(s["jobs"]), {k: v / 3600 for k, v in sorted(s["kinds"].items())},
                  s["gpu_s"] / 3600, s["usd"], s["kwh"], s["kg"], s["restart"], s["idle"],
                  s["queue"])
        for key, s in sorted(acc.items(), key=lambda kv: (-kv[1]["usd"], kv[0]))
    ]


def spend_over_time(
    ledger: Ledger, bucket_s: float = 3600.0
) -> dict[str, list[tuple[float, float, float]]]:
    """Per team, (bucket start s, USD, kg CO2e) spent in each bucket: what `--plot` draws."""
    if bucket_s <= 0:
        raise ThriftyError(f"bucket must be positive, got {bucket_s}")
    out: dict[str, dict[int, list[float]]] = {}
    for line in ledger.lines:
        span = line.end_s - line.start_s
        if span <= 0:
            continue
        team = out.setdefault(line.team, {})
        t = line.start_s
        while t < line.end_s:
            b = int(t // bucket_s)
            end = min(line.end_s, (b + 1) * bucket_s)
            part = (end - t) / span
            cell = team.setdefault(b, [0.0, 0.0])
            cell[0] += line.usd * part
            cell[1] += line.kgco2e * part
            t = end
    return {
        team: [(b * bucket_s, v[0], v[1]) for b, v in sorted(cells.items())]
        for team, cells in sorted(out.items())
    }


def per_job(values: Sequence[LedgerEntry]) -> dict[str, float]:
    """Mean GPU-hours, USD, kWh and kg CO2e per job: the savings table's unit."""
    n = max(len(values), 1)
    return {f: math.fsum(getattr(e, f) for e in values) / n for f in REPORT_FIELDS}

"""The instance advisor: which instance, how many, spot or on-demand, to finish a job cheaply.

For every offer of a catalogue (CPU-only instances, each GPU instance type in counts of 1, 2, 4 …
instances, on-demand and spot) it predicts the time to finish from the job's GoodputModel — the
best batch size for that placement, at the job's gradient noise — and the cost as time × hourly
price. It marks the Pareto front of (time, cost) and recommends:

- with a deadline, the cheapest option that meets it;
- with a budget, the fastest option within it (with both, the cheapest meeting both);
- with neither, the cheapest option (with `slack`, the cheapest whose time is within `slack` ×
  the fastest's).

A job's remaining work is given as phases, each a model and the progress (scale-invariant steps,
i.e. steps at the initial batch size) to make under it, because the gradient noise — and so the
best batch size — changes as training proceeds.

Every option pays `startup_h` on top (booting the instances, loading data), which keeps a tiny
job from being sent to a fleet it would finish on in seconds.

CPU-only options need a throughput model of kind `cpu` (what a job measured on a CPU), or a
`cpu_slowdown`: how many times slower than one GPU of `cpu_reference` a CPU instance runs the job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from thrifty.accounting.prices import KIND_ACCELERATOR, CloudOffer
from thrifty.errors import ThriftyError
from thrifty.goodput import GoodputModel

CPU = "cpu"
INSTANCE_COUNTS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Phase:
    model: GoodputModel
    progress: float  # scale-invariant steps to make under this model


@dataclass(frozen=True)
class Option:
    offer: CloudOffer
    instances: int
    spot: bool
    kind: str  # the model's kind ("cpu" for CPU-only)
    gpus: int
    hours: float
    usd_per_hour: float
    usd: float
    pareto: bool = False
    meets_deadline: bool | None = None  # None: no deadline was given

    @property
    def misses_deadline(self) -> bool:
        return self.meets_deadline is False

    @property
    def label(self) -> str:
        what = "CPU only" if self.gpus == 0 else f"{self.gpus} × {self.offer.accelerator}"
        market = "spot" if self.spot else "on-demand"
        return f"{what} ({self.instances} × {self.offer.instance_type}, {market})"


@dataclass(frozen=True)
class Advice:
    options: list[Option]  # those meeting the deadline first, each part by cost, then time
    recommended: Option | None
    reasons: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _goodput(model: GoodputModel, kind: str, nodes: int, replicas: int, cpu_slowdown: float | None,
             cpu_reference: str) -> float:
    if kind == CPU and CPU not in model.throughput:
        if cpu_slowdown is None:
            return 0.0
        g = model.best(cpu_reference, 1, 1)[0]
        return float(g) / cpu_slowdown
    return float(model.best(kind, nodes, replicas)[0])


def hours_to_finish(
    phases: Sequence[Phase], kind: str, nodes: int, replicas: int,
    cpu_slowdown: float | None = None, cpu_reference: str = "aws",
) -> float:
    """Predicted hours to make every phase's progress on `replicas` workers over `nodes` nodes
    (inf where the placement cannot train)."""
    seconds = 0.0
    for phase in phases:
        if phase.progress <= 0:
            continue
        goodput = _goodput(phase.model, kind, nodes, replicas, cpu_slowdown, cpu_reference)
        if goodput <= 0:
            return math.inf
        seconds += phase.progress * phase.model.limits.init_batch_size / goodput
    return seconds / 3600


def _pareto(options: list[Option]) -> list[Option]:
    marked = []
    for o in options:
        dominated = any(
            (p.hours <= o.hours and p.usd <= o.usd) and (p.hours < o.hours or p.usd < o.usd)
            for p in options
        )
        marked.append(Option(**{**o.__dict__, "pareto": not dominated}))
    return marked


def advise(
    phases: Sequence[Phase],
    offers: Sequence[CloudOffer],
    *,
    kind_accelerator: Mapping[str, str] = KIND_ACCELERATOR,
    deadline_h: float | None = None,
    budget_usd: float | None = None,
    max_gpus: int = 64,
    spot: bool = True,
    slack: float | None = None,
    cpu_slowdown: float | None = None,
    cpu_reference: str = "aws",
    startup_h: float = 0.05,
) -> Advice:
    """Rank every offer (see the module docstring)."""
    if not phases:
        raise ThriftyError("the job has no work left to advise on")
    if deadline_h is not None and deadline_h <= 0:
        raise ThriftyError(f"--deadline must be positive, got {deadline_h}")
    if budget_usd is not None and budget_usd <= 0:
        raise ThriftyError(f"--budget must be positive, got {budget_usd}")
    if cpu_slowdown is not None and cpu_slowdown <= 0:
        raise ThriftyError(f"--cpu-slowdown must be positive, got {cpu_slowdown}")
    model_kinds = set(phases[0].model.throughput)
    by_board = {kind_accelerator.get(k, k): k for k in model_kinds if k != CPU}
    cpu_known = CPU in model_kinds or (cpu_slowdown is not None and cpu_reference in model_kinds)
    limit = phases[0].model.limits.max_replicas()
    options: list[Option] = []
    skipped: list[str] = []
    for offer in offers:
        if not offer.accelerator:
            if not cpu_known:
                skipped.append(f"{offer.label}: no CPU throughput known for this job "
                               "(measure it, or give --cpu-slowdown)")
                continue
            kind, counts, per = CPU, (1,), 0
        elif offer.accelerator in by_board:
            kind, counts = by_board[offer.accelerator], INSTANCE_COUNTS
            per = offer.accelerator_count
        else:
            skipped.append(f"{offer.label}: no throughput model for {offer.accelerator}")
            continue
        for instances in counts:
            gpus = instances * per
            if gpus > max_gpus or (gpus > limit and gpus > per):
                break
            hours = hours_to_finish(phases, kind, instances, max(gpus, 1), cpu_slowdown,
                                    cpu_reference)
            if not math.isfinite(hours):
                continue
            hours += startup_h
            for on_spot in (False, True) if spot else (False,):
                price = offer.usd_per_hour(on_spot)
                if price is None:
                    continue
                rate = price * instances
                options.append(Option(offer, instances, on_spot, kind, gpus, hours, rate,
                                      rate * hours))
    if not options:
        raise ThriftyError("no catalogue offer can run this job: " + "; ".join(skipped))
    if deadline_h is not None:  # marked, and listed after every option that is in time
        options = [replace(o, meets_deadline=o.hours <= deadline_h) for o in options]
    options = sorted(_pareto(options), key=lambda o: (o.misses_deadline, o.usd, o.hours))
    chosen, why = _recommend(options, deadline_h, budget_usd, slack)
    return Advice(options, chosen, _reasons(options, chosen, why), skipped)


def _recommend(options: list[Option], deadline_h: float | None, budget_usd: float | None,
               slack: float | None) -> tuple[Option, str]:
    fastest = min(options, key=lambda o: (o.hours, o.usd))
    meets = [o for o in options
             if (deadline_h is None or o.hours <= deadline_h)
             and (budget_usd is None or o.usd <= budget_usd)]
    if deadline_h is not None and meets:
        best = min(meets, key=lambda o: (o.usd, o.hours))
        within = f" and the USD {budget_usd:g} budget" if budget_usd is not None else ""
        return best, f"the cheapest option that meets the {deadline_h:g} h deadline{within}"
    if budget_usd is not None and meets:
        return (min(meets, key=lambda o: (o.hours, o.usd)),
                f"the fastest option within the USD {budget_usd:g} budget")
    if deadline_h is not None or budget_usd is not None:
        return fastest, "nothing meets the deadline/budget: the fastest option"
    if slack is None:
        return options[0], "the cheapest option (no deadline or budget given)"
    near = [o for o in options if o.hours <= slack * fastest.hours]
    return (min(near, key=lambda o: (o.usd, o.hours)),
            f"the cheapest option within {slack:g}× the fastest time ({fastest.hours:.2f} h)")


def _reasons(options: list[Option], chosen: Option, why: str) -> list[str]:
    reasons = [f"recommended {chosen.label}: {chosen.hours:.2f} h, USD {chosen.usd:.2f} — {why}"]
    cpu = [o for o in options if o.kind == CPU]
    gpu = [o for o in options if o.kind != CPU]
    if cpu and gpu:
        c = min(cpu, key=lambda o: o.usd)
        g = min((o for o in gpu if o.gpus == min(x.gpus for x in gpu)),
                key=lambda o: (o.usd, o.hours))
        speedup = c.hours / g.hours
        price = g.usd_per_hour / c.usd_per_hour
        verdict = ("a GPU pays for itself" if speedup > price
                   else "the GPU is not worth its price")
        reasons.append(
            f"one {g.offer.accelerator} GPU is {speedup:.1f}× as fast as CPU only for "
            f"{price:.1f}× the hourly price ({g.offer.instance_type} vs {c.offer.instance_type}): "
            f"{verdict}"
        )
    spots = [o for o in options if o.spot]
    if spots and not chosen.spot and any(o.offer == chosen.offer and o.instances ==
                                         chosen.instances for o in spots):
        twin = next(o for o in spots if o.offer == chosen.offer and o.instances == chosen.instances)
        reasons.append(f"spot would cost USD {twin.usd:.2f} for the same time, at the risk of "
                       "interruptions (the job resumes from its checkpoint)")
    if chosen.spot:
        reasons.append("spot capacity can be reclaimed: the job must checkpoint (it resumes, at "
                       "the cost of a restart)")
    front = [o for o in options if o.pareto]
    reasons.append(f"{len(front)} of {len(options)} options are on the time/cost Pareto front")
    return reasons

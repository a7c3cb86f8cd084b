"""The instance advisor: CPU where a GPU does not pay, GPUs where they do, with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.accounting.advisor import Phase, advise, hours_to_finish
from thrifty.accounting.prices import load_catalogue
from thrifty.goodput import (
    BatchLimits,
    GoodputModel,
    GradientStats,
    StepObservation,
    fit_throughput,
)
from thrifty.sim.advice import profile_phases
from thrifty.sim.profiles import ProfileSet


def small_job() -> list[Phase]:
    """A small model whose steps are mostly fixed overhead: a GPU is barely faster. The step
    times (seconds at per-worker batch sizes) are what such a job would measure."""
    def fit(per_sample: float, overhead: float):
        return fit_throughput([
            StepObservation(1, 1, b, overhead + per_sample * b, 0.0) for b in (32, 64, 128, 256)
        ])

    model = GoodputModel(
        throughput={"cpu": fit(2.0e-5, 0.010), "aws": fit(0.5e-5, 0.008)},
        grad=GradientStats(sqr=1.0, var=50.0),
        limits=BatchLimits(init_batch_size=64, max_batch_size=256, min_local_bsz=32,
                           max_local_bsz=256),
    )
    return [Phase(model, 200_000.0)]


def test_a_small_job_goes_to_cpu_and_the_reasons_say_why(data_root: Path) -> None:
    offers = load_catalogue(data_root / "prices" / "cloud-gpu-prices.csv")
    advice = advise(small_job(), offers, deadline_h=1)
    assert advice.recommended is not None and advice.recommended.gpus == 0
    assert advice.recommended.offer.accelerator == ""
    assert any("not worth its price" in r for r in advice.reasons)
    # and it is really the cheapest option on offer
    assert advice.recommended.usd == min(o.usd for o in advice.options)


def test_imagenet_goes_to_gpus_and_options_form_a_pareto_front(data_root: Path) -> None:
    offers = load_catalogue(data_root / "prices" / "cloud-gpu-prices.csv")
    profile = ProfileSet(data_root, "sia").get("imagenet", ("aws", "rtx", "dgx-ext"))
    phases = profile_phases(profile)
    advice = advise(phases, offers, cpu_slowdown=30, deadline_h=24)
    chosen = advice.recommended
    assert chosen is not None and chosen.gpus > 0 and chosen.hours <= 24
    assert any("pays for itself" in r for r in advice.reasons)
    meeting = [o for o in advice.options if o.hours <= 24]
    assert chosen.usd == min(o.usd for o in meeting)
    front = [o for o in advice.options if o.pareto]
    for o in advice.options:  # every option off the front is dominated by one on it
        if not o.pareto:
            assert any(p.hours <= o.hours and p.usd <= o.usd for p in front)
    # more T4s finish sooner, each doubling less than twice as fast (communication)
    one = hours_to_finish(phases, "aws", 1, 1)
    four = hours_to_finish(phases, "aws", 1, 4)
    assert one / 4 < four < one


def test_a_budget_picks_the_fastest_within_it(data_root: Path) -> None:
    offers = load_catalogue(data_root / "prices" / "cloud-gpu-prices.csv")
    phases = profile_phases(ProfileSet(data_root, "sia").get("cifar10", ("aws", "dgx-ext")))
    advice = advise(phases, offers, budget_usd=1.0, spot=False)
    within = [o for o in advice.options if o.usd <= 1.0]
    assert advice.recommended is not None
    assert advice.recommended.hours == min(o.hours for o in within)
    assert not any(o.spot for o in advice.options)
    with pytest.raises(Exception, match="--budget must be positive"):
        advise(phases, offers, budget_usd=-1)

"""The instance advisor on two jobs: a small one that should stay on a CPU, and ImageNet.

Both against the catalogue `prices/cloud-gpu-prices.csv`, with a deadline. The small job is a
synthetic model whose steps are mostly fixed overhead (a GPU is 1.4× faster at 5× the price);
ImageNet's model comes from its measured profiles on T4, RTX 2080 Ti and A100, with CPU-only
assumed 30× slower than one T4. Prints each recommendation and its reasons.

    python benchmarks/accounting_advisor.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from thrifty.accounting.advisor import Advice, Phase, advise
from thrifty.accounting.prices import load_catalogue
from thrifty.cli.options import resolve_data
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
    def fit(per_sample: float, overhead: float):
        return fit_throughput([StepObservation(1, 1, b, overhead + per_sample * b, 0.0)
                               for b in (32, 64, 128, 256)])

    model = GoodputModel(
        throughput={"cpu": fit(2.0e-5, 0.010), "aws": fit(0.5e-5, 0.008)},
        grad=GradientStats(sqr=1.0, var=50.0),
        limits=BatchLimits(64, 256, 32, 256),
    )
    return [Phase(model, 200_000.0)]


def show(title: str, advice: Advice) -> None:
    print(title)
    for reason in advice.reasons:
        print(f"  • {reason}")
    front = [o for o in advice.options if o.pareto]
    print("  Pareto front: " + "; ".join(f"{o.label} {o.hours:.2f} h USD {o.usd:.2f}"
                                         for o in front))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    root = resolve_data(args.data)
    offers = load_catalogue(root / "prices" / "cloud-gpu-prices.csv")
    show("small job, 1 h deadline:", advise(small_job(), offers, deadline_h=1))
    imagenet = profile_phases(ProfileSet(root, "sia").get("imagenet", ("aws", "rtx", "dgx-ext")))
    show("ImageNet (ResNet-50, 90 epochs), 24 h deadline:",
         advise(imagenet, offers, deadline_h=24, cpu_slowdown=30))
    show("ImageNet, USD 40 budget:", advise(imagenet, offers, budget_usd=40, cpu_slowdown=30))


if __name__ == "__main__":
    main()

"""Carbon-aware start times on the June 2020 series: CO2 saved with 6, 24 and 72 h of slack.

Each job of Pollux workload 1, with the duration and energy it had in a FIFO simulation on
`pollux64`, is submitted at its workload time on each of ten days spread over June 2020 (days 0,
3, …, 27). With a deadline of submit + duration + slack, it starts at the greenest window that
still meets it (`best_start`, 30-minute grid); the saving is against starting at once. Printed per
grid region and slack: total kg CO2e at once, shifted, and the saving; plus the five jobs that
saved most in Germany with 24 h slack.

    python benchmarks/accounting_carbon.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from thrifty.accounting.carbon import best_start, kg_co2e
from thrifty.cli import resolve_data
from thrifty.sim.costing import carbon_regions, resolve_intensity
from thrifty.sim.runner import RunSpec, run

SLACKS_H = (6, 24, 72)
DAYS = range(0, 30, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    root = resolve_data(args.data)
    summary = run(RunSpec("fifo", root / "pollux" / "workloads" / "workload-1.csv", "pollux64",
                          root, keep_ledger=True))
    jobs = [(e.job, e.submit_s, e.end_s - e.start_s, e.kwh) for e in summary.ledger.entries
            if e.start_s is not None and e.end_s is not None and e.end_s > e.start_s]
    print(f"{len(jobs)} jobs, {sum(j[3] for j in jobs):.1f} kWh per copy of the workload, "
          f"{len(DAYS)} copies over June 2020")
    print(f"{'region':8}{'slack h':>8}{'kg at once':>12}{'kg shifted':>12}{'saved':>8}")
    best_jobs = []
    for region in carbon_regions(root):
        series = resolve_intensity(region, root)
        for slack in SLACKS_H:
            now_kg = shifted_kg = 0.0
            for day in DAYS:
                for name, submit, duration, kwh in jobs:
                    ready = day * 86400 + submit
                    choice = best_start(series, ready, duration, ready + duration + slack * 3600,
                                        step_s=1800)
                    now_kg += kg_co2e(kwh, choice.now_g_per_kwh)
                    shifted_kg += kg_co2e(kwh, choice.chosen_g_per_kwh)
                    if region == "ger" and slack == 24 and day == 0:
                        best_jobs.append((kg_co2e(kwh, choice.now_g_per_kwh - choice
                                                  .chosen_g_per_kwh), name, choice))
            print(f"{region:8}{slack:>8}{now_kg:>12.2f}{shifted_kg:>12.2f}"
                  f"{1 - shifted_kg / now_kg:>8.1%}")
    print("largest savings, ger, 24 h slack, day 0 (kg CO2e, start delay h):")
    for saved, name, choice in sorted(best_jobs, key=lambda x: x[0], reverse=True)[:5]:
        print(f"  {name}: {saved:.3f} kg ({choice.saving_fraction:.0%}), starts "
              f"{(choice.start_s % 86400) / 3600:.1f} h into the day")


if __name__ == "__main__":
    main()

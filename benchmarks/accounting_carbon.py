"""Carbon-aware start times on the June 2020 series: CO2 saved with 6, 24 and 72 h of slack.

Measured in simulations, not computed beside them: Pollux workload 1 (160 jobs, FIFO with the
owners' own GPU counts and batch sizes, on `pollux64`) at half its arrival rate (as `--load 0.5`:
the jobs arrive over 16 h, so the cluster has room to move work into), submitted from midnight on
each of three days of June 2020 (days 0, 10, 20: a Monday, a Thursday, a Sunday). Every job may
finish up to the slack later than if it started at once (`thrifty simulate --carbon-slack`): the
carbon-aware wrapper (`thrifty.policy.carbon_aware`) holds it until the greenest window that still
meets that deadline, with room left for the other jobs. FIFO because it is cheap (a run takes
seconds; an adaptive policy takes about a minute per run) and is what most clusters run.

Per grid region and slack, summed over the three days:
- kg without: the same workload simulated without the wrapper (one run per day, its ledger
  priced on each region's series: the schedule does not depend on the grid);
- kg with: the carbon-aware run; saved: 1 − with / without;
- per job: the saving the wrapper attributes to the waits themselves (each held job's own run
  re-priced as if started at once, `ShiftOutcome`), to compare with the whole-run figure;
- deadlines missed out of all jobs, with shifting (and, for the same deadlines, without);
- average JCT without and with: the time cost of waiting.

    python benchmarks/accounting_carbon.py            # about 2 minutes on 2 cores
    python benchmarks/accounting_carbon.py --days 0 --slacks 24 --regions ger
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from thrifty.accounting.tariff import carbon_regions, resolve_intensity
from thrifty.cli.options import resolve_data
from thrifty.sim.batch import Pair, run_pairs
from thrifty.sim.metrics import Summary
from thrifty.sim.runner import RunSpec
from thrifty.sim.workload import load_workload

WORKLOAD = Path("pollux") / "workloads" / "workload-1.csv"
CLUSTER = "pollux64"
POLICY = "fifo"
LOAD = 0.5
DAYS = (0, 10, 20)
SLACKS_H = (6, 24, 72)


@dataclass
class Cell:
    """Totals of one (region, slack) over the days."""

    kg_without: float = 0.0
    kg_with: float = 0.0
    kg_at_once: float = 0.0  # the wrapper's per-job counterfactual
    missed: int = 0
    missed_without: int = 0
    jobs: int = 0
    jct_without_s: float = 0.0
    jct_with_s: float = 0.0


def shifted_copy(source: Path, folder: Path, day: int, load: float = LOAD) -> Path:
    """The workload at `load` times its arrival rate, submitted `day` days after the series'
    first reading (written out, since `--load` would scale the day's offset too)."""
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("time")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[column] = repr(float(cells[column]) / load + day * 86400.0)
        out.append(",".join(cells))
    path = folder / f"{source.stem}-day{day:02d}.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def repriced_kg(summary: Summary, region: str, root: Path) -> float:
    """The run's energy, segment by segment, at `region`'s intensity at the time it was used."""
    series = resolve_intensity(region, root)
    return math.fsum(line.kwh * series.mean_g_per_kwh(line.start_s, line.end_s) / 1000
                     for line in summary.ledger.lines)


def missed_without(baseline: Summary, shifted: Summary) -> int:
    """Deadlines the shifted run set, checked against the run without shifting."""
    ends = {e.job: e.end_s for e in baseline.ledger.entries}
    return sum(1 for o in shifted.carbon_shift
               if o.deadline_s is not None and (ends[o.job] is None
                                                or ends[o.job] > o.deadline_s + 1e-6))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--days", default=",".join(map(str, DAYS)))
    parser.add_argument("--slacks", default=",".join(map(str, SLACKS_H)), help="hours")
    parser.add_argument("--regions", default=None, help="default: every shipped series")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    root = resolve_data(args.data)
    days = [int(d) for d in args.days.split(",")]
    slacks = [float(s) for s in args.slacks.split(",")]
    regions = args.regions.split(",") if args.regions else list(carbon_regions(root))
    jobs = len(load_workload(root / WORKLOAD).jobs)
    with tempfile.TemporaryDirectory(prefix="thrifty-carbon-") as folder:
        files = {day: shifted_copy(root / WORKLOAD, Path(folder), day) for day in days}

        def pair(day: int, region: str, slack_h: float | None) -> Pair:
            spec = RunSpec(POLICY, files[day], CLUSTER, root, carbon=region,
                           keep_ledger=True,
                           carbon_slack=None if slack_h is None else slack_h * 3600)
            return Pair(spec, f"day {day} {region} {slack_h or 0:g} h", jobs)

        keys = [(day, regions[0], None) for day in days] + [
            (day, region, slack) for day in days for region in regions for slack in slacks]
        outcomes = run_pairs([pair(*key) for key in keys], args.workers)
    failed = [o for o in outcomes if o.summary is None]
    for o in failed:
        sys.stderr.write(f"error: {o.pair.label}: {o.error}\n")
    if failed:
        raise SystemExit(1)
    runs = {key: o.summary for key, o in zip(keys, outcomes, strict=True)}
    cells: dict[tuple[str, float], Cell] = {}
    for day in days:
        base = runs[(day, regions[0], None)]
        assert base is not None
        for region in regions:
            without = repriced_kg(base, region, root)
            for slack in slacks:
                shifted = runs[(day, region, slack)]
                assert shifted is not None
                cell = cells.setdefault((region, slack), Cell())
                cell.kg_without += without
                cell.kg_with += shifted.kgco2e
                cell.kg_at_once += shifted.kgco2e_at_once
                cell.missed += shifted.deadlines_missed
                cell.missed_without += missed_without(base, shifted)
                cell.jobs += shifted.deadline_jobs
                cell.jct_without_s += base.avg_jct_s / len(days)
                cell.jct_with_s += shifted.avg_jct_s / len(days)
    print(f"{POLICY} on {CLUSTER}, {WORKLOAD.stem} at load {LOAD:g} ({jobs} jobs), days "
          f"{', '.join(map(str, days))} of June 2020")
    print(f"{'region':7}{'slack h':>8}{'kg without':>12}{'kg with':>10}{'saved':>8}"
          f"{'per job':>9}{'missed':>10}{'(without)':>10}{'JCT h':>8}{'→':>2}{'JCT h':>7}")
    for (region, slack), c in cells.items():
        print(f"{region:7}{slack:>8g}{c.kg_without:>12.2f}{c.kg_with:>10.2f}"
              f"{1 - c.kg_with / c.kg_without:>8.1%}{1 - c.kg_with / c.kg_at_once:>9.1%}"
              f"{f'{c.missed}/{c.jobs}':>10}{c.missed_without:>10}"
              f"{c.jct_without_s / 3600:>8.2f}{'':2}{c.jct_with_s / 3600:>7.2f}")


if __name__ == "__main__":
    main()

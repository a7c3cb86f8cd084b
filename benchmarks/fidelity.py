"""Fidelity: does thrifty's simulator reproduce the published results of Pollux and Sia?

Runs the papers' workloads through exactly the code behind `thrifty simulate` and prints the
measured average JCT next to the published one, with their ratio (1.0 = reproduced):

- `pollux64`: Pollux workloads 1-4 and 6 on 16 × 4 T4 under tiresias, optimus and pollux,
  against the per-workload averages of the Pollux artifact (OSDI 2021);
- `philly` and `saturn`: Philly workloads 1-4 and Saturn workloads 1-5 on Sia's heterogeneous
  64-GPU cluster under sia, pollux and gavel, against the published means over each trace's
  workloads (Sia, SOSP 2023), which the paper gives together with p99 JCT, makespan and
  GPU-hours per job (compared too).

    python benchmarks/fidelity.py                       # everything (tens of minutes)
    python benchmarks/fidelity.py --suite pollux64 --policies tiresias --workloads 1
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common import add_run_options, finish
from thrifty.cli.options import resolve_data
from thrifty.cli.output import results_console
from thrifty.cli.tables import results_table
from thrifty.errors import ThriftyError
from thrifty.sim.batch import Outcome, Pair, check_policy, plan_runs, run_pairs

# Published average JCT (seconds) per Pollux workload, in the artifact's own simulator.
POLLUX64_PUBLISHED_S: Mapping[str, Mapping[int, float]] = {
    "pollux": {1: 2089, 2: 3323, 3: 2188, 4: 2721, 6: 2446},
    "tiresias": {1: 2474, 2: 5145, 3: 3876, 4: 3280, 6: 3470},
    "optimus": {1: 4087, 2: 6914, 3: 3944, 4: 5968, 6: 5302},
}
# Published means over each trace's workloads on the heterogeneous cluster:
# (average JCT h, p99 JCT h, makespan h, GPU-hours per job).
SIA_PUBLISHED: Mapping[str, Mapping[str, tuple[float, float, float, float]]] = {
    "philly": {
        "sia": (0.6, 9.5, 14.2, 4.0),
        "pollux": (1.0, 14.9, 24.5, 5.6),
        "gavel": (1.9, 30.0, 33.8, 9.0),
    },
    "saturn": {
        "sia": (0.7, 10.9, 14.9, 4.8),
        "pollux": (1.0, 15.0, 25.5, 5.9),
        "gavel": (2.5, 38.7, 43.0, 12.1),
    },
}
SUITES: Mapping[str, tuple[str, str, tuple[int, ...], tuple[str, ...]]] = {
    # suite: (cluster, workload folder under the data root, workload numbers, policies)
    "pollux64": (
        "pollux64", "pollux/workloads", (1, 2, 3, 4, 6), ("tiresias", "optimus", "pollux")
    ),
    "philly": (
        "sia-hetero64", "sia/workloads/philly", (1, 2, 3, 4), ("sia", "pollux", "gavel")
    ),
    "saturn": (
        "sia-hetero64", "sia/workloads/saturn", (1, 2, 3, 4, 5), ("sia", "pollux", "gavel")
    ),
}


def _numbers(text: str | None) -> set[int] | None:
    return None if text is None else {int(t) for t in text.split(",") if t.strip()}


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def plan(
    suites: Sequence[str],
    data_root: Path,
    policies: Sequence[str] | None,
    workloads: set[int] | None,
    console: Console,
) -> list[Pair]:
    """The pairs of the chosen suites; unless policies were named, skip those that don't import."""
    pairs: list[Pair] = []
    for suite in suites:
        cluster, folder, numbers, suite_policies = SUITES[suite]
        chosen = [p for p in suite_policies if policies is None or p in policies]
        if policies is None:
            ready = []
            for name in chosen:
                try:
                    check_policy(name)
                except Exception as err:  # a policy still missing should not stop the others
                    console.print(f"[yellow]skipping {name}: {err}[/]")
                else:
                    ready.append(name)
            chosen = ready
        files = [
            data_root / folder / f"workload-{n}.csv"
            for n in numbers
            if workloads is None or n in workloads
        ]
        if chosen and files:
            pairs += plan_runs(files, cluster, chosen, data_root)
    return pairs


def _suite_of(pair: Pair) -> str:
    trace = Path(pair.spec.workload).parent.name
    return trace if trace in SIA_PUBLISHED else "pollux64"


def _number(pair: Pair) -> int:
    return int(pair.label.rsplit("-", 1)[-1])


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def fidelity_table(outcomes: Sequence[Outcome]) -> Table:
    """Measured vs published average JCT per workload/policy, ratios, and means per policy."""
    table = Table(title="Fidelity: measured / published average JCT", header_style="bold")
    for header in ("suite", "workload", "policy", "measured s", "published s", "ratio"):
        table.add_column(header, justify="left" if header in ("suite", "workload", "policy")
                         else "right")
    done = [o for o in outcomes if o.summary is not None]
    ratios: dict[tuple[str, str], list[float]] = {}
    sia_jcts: dict[tuple[str, str], list[float]] = {}
    for outcome in done:
        assert outcome.summary is not None
        suite, policy = _suite_of(outcome.pair), outcome.pair.spec.policy
        measured = outcome.summary.avg_jct_s
        if suite == "pollux64":
            published = POLLUX64_PUBLISHED_S[policy][_number(outcome.pair)]
            ratio = measured / published
            ratios.setdefault((suite, policy), []).append(ratio)
            table.add_row(suite, outcome.pair.label, policy, _fmt(measured, 0),
                          _fmt(published, 0), _fmt(ratio))
        else:
            sia_jcts.setdefault((suite, policy), []).append(measured)
            table.add_row(suite, outcome.pair.label, policy, _fmt(measured, 0), "", "")
    table.add_section()
    for (suite, policy), values in ratios.items():
        geo = math.exp(math.fsum(map(math.log, values)) / len(values))
        table.add_row(suite, f"geo-mean of {len(values)}", policy, "", "", _fmt(geo),
                      style="bold")
    for (suite, policy), values in sia_jcts.items():
        mean_s = math.fsum(values) / len(values)
        published = SIA_PUBLISHED[suite][policy][0] * 3600  # published in hours, to one decimal
        table.add_row(suite, f"mean of {len(values)}", policy, _fmt(mean_s, 0),
                      _fmt(published, 0), _fmt(mean_s / published), style="bold")
    return table


def sia_table(outcomes: Sequence[Outcome]) -> Table | None:
    """The other figures Sia publishes per trace, as means over the workloads run."""
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for outcome in outcomes:
        s = outcome.summary
        suite = _suite_of(outcome.pair)
        if s is None or suite not in SIA_PUBLISHED:
            continue
        rows.setdefault((suite, outcome.pair.spec.policy), []).append(
            (s.avg_jct_s / 3600, s.p99_jct_s / 3600, s.makespan_s / 3600, s.gpu_hours / s.jobs)
        )
    if not rows:
        return None
    table = Table(title="Sia's traces: means, measured / published (ratio)", header_style="bold")
    table.add_column("trace")
    table.add_column("policy")
    for header in ("avg JCT h", "p99 JCT h", "makespan h", "GPU-h / job"):
        table.add_column(header, justify="right")
    for (suite, policy), values in rows.items():
        means = [math.fsum(col) / len(col) for col in zip(*values, strict=True)]
        cells = [
            f"{m:.2f} / {p:.1f} ({m / p:.2f})"
            for m, p in zip(means, SIA_PUBLISHED[suite][policy], strict=True)
        ]
        table.add_row(suite, f"{policy} ({len(values)} workloads)", *cells)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, run and report; the exit status says whether every run finished (0) or not (1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--policies", help="comma-separated subset of the suite's policies")
    parser.add_argument("--workloads", help="comma-separated workload numbers, e.g. 1,6")
    add_run_options(parser, workers=None)
    args = parser.parse_args(argv)
    console = results_console()
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    names = _names(args.policies)
    offered = {p for suite in suites for p in SUITES[suite][3]}
    if names is not None and set(names) - offered:
        print(f"error: --policies: no published figures for {', '.join(set(names) - offered)} "
              f"in the chosen suite(s) (there are: {', '.join(sorted(offered))})",
              file=sys.stderr)
        return 2
    try:
        pairs = plan(suites, resolve_data(args.data), names, _numbers(args.workloads), console)
    except (ThriftyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not pairs:
        print("error: nothing to run: no chosen workload or no importable policy", file=sys.stderr)
        return 2
    outcomes = run_pairs(pairs, args.workers)
    console.print(results_table(outcomes, title="All runs"))
    console.print(fidelity_table(outcomes))
    extra = sia_table(outcomes)
    if extra is not None:
        console.print(extra)
    return 1 if finish(outcomes, args.json) else 0


if __name__ == "__main__":
    sys.exit(main())

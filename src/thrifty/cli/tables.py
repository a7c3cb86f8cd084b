"""The tables the commands print: what a person reads, from the records the packages return.

Kept together so that a figure is formatted the same way in every table (`fmt_metric` for the
simulation results, `fmt_amount` for the accounting ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from thrifty.accounting.ledger import SpendRow
from thrifty.cli.output import fmt_amount, fmt_metric
from thrifty.sim.batch import Outcome
from thrifty.sim.metrics import Summary

if TYPE_CHECKING:
    from thrifty.accounting.advisor import Advice

Column = tuple[str, str, float]  # (header, Summary attribute, divisor turning it into the unit)

COLUMNS: tuple[Column, ...] = (
    ("avg JCT h", "avg_jct_s", 3600.0),
    ("p50 JCT h", "p50_jct_s", 3600.0),
    ("p99 JCT h", "p99_jct_s", 3600.0),
    ("makespan h", "makespan_s", 3600.0),
    ("GPU-h", "gpu_hours", 1.0),
    ("USD", "usd", 1.0),
    ("kWh", "kwh", 1.0),
    ("kg CO2e", "kgco2e", 1.0),
    ("restarts /job", "restarts_per_job", 1.0),
    ("worst FTF", "worst_ftf", 1.0),
    ("round med ms", "policy_round_median_s", 1e-3),
    ("round p95 ms", "policy_round_p95_s", 1e-3),
    ("wall s", "wall_s", 1.0),
)

# With --autoscale, what renting the nodes cost: node-hours held and their USD (every run's JSON
# has both; the table shows them only then, to stay narrow).
CLOUD_COLUMNS: tuple[Column, ...] = (
    ("node-h", "node_hours", 1.0),
    ("held USD", "held_usd", 1.0),
)

# Left out, in this order, while the results table is wider than the terminal: the identifying
# columns (workload, policy) and the average JCT always stay, and every cell stays whole.
LEAST_NEEDED_FIRST = ("round p95 ms", "wall s", "round med ms", "p50 JCT h", "kWh", "held USD",
                      "makespan h", "node-h", "kg CO2e", "p99 JCT h", "worst FTF",
                      "restarts /job", "USD", "GPU-h")

RATIO_FIELDS = (
    # (header, Summary attribute)
    ("GPU-h", "allocated_gpu_hours"),
    ("USD", "usd"),
    ("kWh", "kwh"),
    ("kg CO2e", "kgco2e"),
)


def _columns(outcomes: Sequence[Outcome]) -> tuple[Column, ...]:
    if any(o.pair.spec.autoscale for o in outcomes):
        at = [attr for _, attr, _ in COLUMNS].index("usd") + 1
        return COLUMNS[:at] + CLOUD_COLUMNS + COLUMNS[at:]
    return COLUMNS


def _values(summary: Summary, columns: Sequence[Column] = COLUMNS) -> list[float]:
    return [float(getattr(summary, attr)) / div for _, attr, div in columns]


def two_lines(header: str) -> str:
    """A header of several words on two lines, split near its middle, to keep columns narrow."""
    words = header.split()
    if len(words) < 2:
        return header
    cut = min(range(1, len(words)),
              key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))))
    return " ".join(words[:cut]) + "\n" + " ".join(words[cut:])


def add_columns(table: Table, headers: Sequence[str], left: int = 1,
                stacked: bool = False) -> None:
    """The first `left` columns name the row, the others hold figures (`stacked`: under
    two-line headers, for a narrow terminal). Nothing wraps and no cell is ever cut short with
    an ellipsis; a name folds onto a second line only in a terminal too narrow for even the
    fewest columns."""
    for i, header in enumerate(headers):
        if i < left:
            table.add_column(header, no_wrap=True, overflow="fold")
        else:
            table.add_column(two_lines(header) if stacked else header, justify="right",
                             no_wrap=True, overflow="fold")


def natural_width(table: Table) -> int:
    """The characters `table` takes with every cell on one line."""
    console = Console(width=100_000)
    return Measurement.get(console, console.options, table).maximum


def fit_width(build: Callable[[frozenset[str], bool], Table], droppable: Sequence[str],
              width: int | None) -> Table:
    """`build(left_out, stacked)` as it fits in `width` characters (None: any width): headers
    on one line if that fits, else on two, then with as few of the `droppable` columns left
    out as needed; the caption names what was left out."""
    table = build(frozenset(), False)
    if width is None or natural_width(table) <= width:
        return table
    left_out: list[str] = []
    table = build(frozenset(), True)
    for header in droppable:
        if natural_width(table) <= width:
            break
        left_out.append(header)
        table = build(frozenset(left_out), True)
    if left_out:
        table.caption = (f"left out for the terminal's width: {', '.join(left_out)} "
                         "(--json has every figure)")
    return table


def results_table(outcomes: Sequence[Outcome], title: str | None = None,
                  width: int | None = None) -> Table:
    """Rows workload × policy, then (with several workloads) the mean per policy; columns that
    do not fit in `width` are left out, least needed first."""
    return fit_width(
        lambda left_out, stacked: _results_table(outcomes, title, left_out, stacked),
        LEAST_NEEDED_FIRST, width)


def _results_table(outcomes: Sequence[Outcome], title: str | None, left_out: frozenset[str],
                   stacked: bool) -> Table:
    table = Table(title=title, header_style="bold")
    columns = [c for c in _columns(outcomes) if c[0] not in left_out]
    add_columns(table, ["workload", "policy", *(header for header, _, _ in columns)], left=2,
                stacked=stacked)
    done = [(o, o.summary) for o in outcomes if o.summary is not None]
    for outcome, summary in done:
        table.add_row(outcome.pair.label, outcome.pair.spec.policy,
                      *map(fmt_metric, _values(summary, columns)))
    if len({o.pair.spec.workload for o, _ in done}) > 1:
        by_policy: dict[str, list[list[float]]] = {}
        for outcome, summary in done:
            by_policy.setdefault(outcome.pair.spec.policy, []).append(_values(summary, columns))
        table.add_section()
        for policy, rows in by_policy.items():
            means = [math.fsum(column) / len(column) for column in zip(*rows, strict=True)]
            table.add_row(f"mean of {len(rows)}", policy, *map(fmt_metric, means), style="bold")
    return table


def baseline_table(rows: Sequence[dict[str, Any]], baseline: str) -> Table:
    """Per job figures and their ratios to `baseline`, then the geometric mean per policy."""
    table = Table(title=f"Per job against {baseline} (users' own GPU counts and batch sizes)",
                  header_style="bold")
    headers = [f"{h}{suffix}" for h, _ in RATIO_FIELDS for suffix in (" /job", f" × {baseline}")]
    add_columns(table, ["workload", "policy", *headers], left=2)
    for row in rows:
        cells = []
        for _, attr in RATIO_FIELDS:
            cells += [fmt_amount(row[f"{attr}_per_job"]), f"{row[f'{attr}_ratio']:.2f}"]
        table.add_row(row["workload"], row["policy"], *cells)
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    workloads = {r["workload"] for r in rows}
    if len(workloads) > 1:
        table.add_section()
        for policy in policies:
            mine = [r for r in rows if r["policy"] == policy]
            cells = []
            for _, attr in RATIO_FIELDS:
                ratios = [r[f"{attr}_ratio"] for r in mine]
                geo = math.exp(math.fsum(math.log(x) for x in ratios) / len(ratios)) if all(
                    x > 0 for x in ratios) else float("nan")
                cells += ["", f"{geo:.2f}"]
            table.add_row(f"geomean of {len(mine)}", policy, *cells, style="bold")
    return table


def shift_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The totals of carbon-aware runs; the per-job figures go to --json."""
    table = Table(title="Carbon-aware start times: each job's run against the same run started "
                  "at once (simulate without --carbon-slack to compare whole runs)",
                  header_style="bold")
    add_columns(table, ["workload", "policy", "held jobs", "mean wait h", "kg CO2e at once",
                        "kg CO2e", "saved", "deadlines missed"], left=2)
    for row in rows:
        held = [j["held_s"] for j in row["jobs"] if j["held_s"] > 0]
        at_once = row["kgco2e_at_once"]
        saved = row["saved_kg"] / at_once if at_once > 0 else float("nan")
        table.add_row(
            row["workload"], row["policy"], str(len(held)),
            fmt_amount(math.fsum(held) / len(held) / 3600) if held else "0",
            fmt_amount(at_once), fmt_amount(row["kgco2e"]), f"{saved:.1%}",
            f"{row['deadlines_missed']}/{row['deadline_jobs']}",
        )
    return table


def report_table(rows: Sequence[SpendRow], by: str, title: str) -> Table:
    """`thrifty report`: one row per job, user or team, then the totals."""
    f = fmt_amount
    table = Table(title=title, header_style="bold")
    table.add_column(by, no_wrap=True, overflow="fold")
    for header in ("jobs", "GPU-h", "by kind", "USD", "kWh", "kg CO2e", "restart GPU-h",
                   "idle GPU-h", "queued h"):
        table.add_column(header, justify="right")
    for r in rows:
        kinds = ", ".join(f"{k} {f(v)}" for k, v in r.gpu_hours_by_kind.items())
        table.add_row(r.key, str(r.jobs), f(r.gpu_hours), kinds, f(r.usd), f(r.kwh),
                      f(r.kgco2e), f(r.restart_gpu_hours), f(r.idle_gpu_hours), f(r.queue_h))
    if rows:
        table.add_section()
        table.add_row("total", str(sum(r.jobs for r in rows)),
                      f(math.fsum(r.gpu_hours for r in rows)), "",
                      *(f(math.fsum(getattr(r, a) for r in rows))
                        for a in ("usd", "kwh", "kgco2e", "restart_gpu_hours", "idle_gpu_hours",
                                  "queue_h")), style="bold")
    return table


def advice_table(advice: Advice, what: str, top: int, deadline_h: float | None = None) -> Table:
    """`thrifty advise`: the first `top` options, the Pareto front and the recommendation; with
    a deadline, the options that miss it come last, below a line, dim and marked."""
    table = Table(title=f"Options for {what}", header_style="bold")
    headers = ["option", "hours", "USD/h", "USD", "Pareto"]
    if deadline_h is not None:
        headers.append(f"in {deadline_h:g} h")
    for header in (*headers, ""):
        table.add_column(header, justify="left" if header == "option" else "right")
    shown = [o for i, o in enumerate(advice.options)
             if i < top or o.pareto or o is advice.recommended]
    for i, o in enumerate(shown):
        if o.misses_deadline and (i == 0 or not shown[i - 1].misses_deadline):
            table.add_section()
        mark = "← recommended" if o is advice.recommended else ""
        cells = [o.label, fmt_amount(o.hours), fmt_amount(o.usd_per_hour), fmt_amount(o.usd),
                 "●" if o.pareto else ""]
        if deadline_h is not None:
            cells.append("misses" if o.misses_deadline else "yes")
        style = "bold" if o is advice.recommended else "dim" if o.misses_deadline else None
        table.add_row(*cells, mark, style=style)
    return table


def deadline_note(advice: Advice, deadline_h: float) -> str | None:
    """The line under the advice table that says how many options miss the deadline."""
    missing = sum(o.misses_deadline for o in advice.options)
    if not missing:
        return None
    return (f"{missing} of {len(advice.options)} options miss the {deadline_h:g} h deadline: "
            "they are marked 'misses' and listed after those in time (--top shows more rows)")


def generate_table(rows: Sequence[tuple[str, str, str]]) -> Table:
    """`thrifty workload generate`: base against generated, one figure per row."""
    table = Table(title="thrifty workload generate", header_style="bold")
    table.add_column("")
    table.add_column("base", justify="right")
    table.add_column("generated", justify="right")
    for row in rows:
        table.add_row(*row)
    return table

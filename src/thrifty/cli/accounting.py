"""The accounting commands: `thrifty report` over a ledger, `thrifty advise` on instances, and the
cost pieces of `thrifty simulate` (the savings against a baseline, the ledger file).

Kept in one module so that the accounting surface lives in one place; the tables they print are
in `tables.py`.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from thrifty.accounting.ledger import GroupBy, Ledger, report, spend_over_time
from thrifty.cli.cluster import api_client
from thrifty.cli.options import (
    DataOpt,
    ServerOpt,
    TokenOpt,
    check_folder,
    json_option,
    resolve_data,
)
from thrifty.cli.output import fail, results_console
from thrifty.cli.tables import RATIO_FIELDS, advice_table, deadline_note, report_table
from thrifty.cluster.client import DEFAULT_SERVER
from thrifty.errors import ThriftyError
from thrifty.sim.batch import Outcome

# --------------------------------------------------------------------------------------------
# thrifty simulate: --baseline, --ledger and carbon-aware start times
# --------------------------------------------------------------------------------------------


def with_baseline(policies: Sequence[str], baseline: str | None) -> list[str]:
    """The policies to run: the baseline first if it is not among them already."""
    names = list(policies)
    if baseline and baseline not in names:
        names.insert(0, baseline)
    return names


def baseline_rows(outcomes: Sequence[Outcome], baseline: str) -> list[dict[str, Any]]:
    """Per workload and policy: GPU-hours, USD, kWh and kg CO2e per job, and each as a ratio to
    the baseline on the same workload (< 1: the policy is cheaper)."""
    done = [(o, o.summary) for o in outcomes if o.summary is not None]
    base = {o.pair.label: s for o, s in done if o.pair.spec.policy == baseline}
    rows = []
    for o, s in done:
        ref = base.get(o.pair.label)
        if ref is None:
            continue
        row: dict[str, Any] = {"workload": o.pair.label, "policy": o.pair.spec.policy,
                               "jobs": s.jobs}
        for _, attr in RATIO_FIELDS:
            per_job = getattr(s, attr) / max(s.jobs, 1)
            ref_per_job = getattr(ref, attr) / max(ref.jobs, 1)
            row[f"{attr}_per_job"] = per_job
            row[f"{attr}_ratio"] = per_job / ref_per_job if ref_per_job > 0 else float("nan")
        rows.append(row)
    return rows


def shift_rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Per carbon-aware run: kg CO2e as run and had every job started at once, and per job
    what it waited and saved and whether its deadline held. Empty when no run could wait."""
    rows = []
    for o in outcomes:
        s = o.summary
        if s is None or not s.carbon_shift:
            continue
        rows.append({
            "workload": o.pair.label,
            "policy": o.pair.spec.policy,
            "kgco2e": s.kgco2e,
            "kgco2e_at_once": s.kgco2e_at_once,
            "saved_kg": s.kgco2e_at_once - s.kgco2e,
            "deadline_jobs": s.deadline_jobs,
            "deadlines_missed": s.deadlines_missed,
            "jobs": [x.to_dict() for x in s.carbon_shift],
        })
    return rows


def ledger_payload(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Every successful run's ledger, for `thrifty report`."""
    return {
        "runs": [
            {"policy": o.pair.spec.policy, "workload": o.pair.label, **o.summary.ledger.to_dict()}
            for o in outcomes
            if o.summary is not None and o.summary.ledger is not None
        ]
    }


# --------------------------------------------------------------------------------------------
# thrifty report
# --------------------------------------------------------------------------------------------


def load_ledgers(path: Path) -> list[tuple[str, Ledger]]:
    """(run label, ledger) per run of a file written by `thrifty simulate --ledger`."""
    if not path.is_file():
        raise ThriftyError(f"{path}: ledger file not found (write one with thrifty simulate "
                           "--ledger PATH)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ThriftyError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise ThriftyError(f"{path}: not a thrifty ledger file (no 'runs' list)")
    out = []
    for i, run in enumerate(runs):
        try:
            out.append((f"{run['policy']} · {run['workload']}", Ledger.from_dict(run)))
        except (KeyError, TypeError, ThriftyError) as err:
            raise ThriftyError(f"{path}: run {i}: {err}") from None
    return out


def parse_since(text: str | None) -> float | None:
    """Seconds of simulated time: a number, or with a unit: 90s, 30m, 6h, 2d."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ThriftyError(f"--since must be a time such as 3600, 30m, 6h or 2d, got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * unit


def plot_spend(ledgers: Sequence[tuple[str, Ledger]], path: Path, bucket_s: float = 3600,
               origin_s: float = 0.0, xlabel: str = "simulated hours") -> None:
    """Spend (USD) and CO2 (kg) per hour per team, one column of panels per run; hours are
    counted from `origin_s` (a live ledger's times are Unix seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(ledgers), figsize=(6 * len(ledgers), 6), squeeze=False,
                             sharex="col")
    for col, (label, ledger) in enumerate(ledgers):
        for team, series in spend_over_time(ledger, bucket_s).items():
            hours = [(t - origin_s) / 3600 for t, _, _ in series]
            axes[0][col].step(hours, [u for _, u, _ in series], where="post", label=team)
            axes[1][col].step(hours, [k for _, _, k in series], where="post", label=team)
        axes[0][col].set_title(label)
        axes[0][col].set_ylabel("USD per hour")
        axes[1][col].set_ylabel("kg CO2e per hour")
        axes[1][col].set_xlabel(xlabel)
        axes[0][col].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _live_ledger(server: str, token: str | None) -> Ledger:
    with api_client(server, token) as client:
        data = client.usage()
    return Ledger.from_dict(data)


def _write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        fields = ["run", "key", "jobs", "gpu_hours", "usd", "kwh", "kgco2e",
                  "restart_gpu_hours", "idle_gpu_hours", "queue_h", "gpu_hours_by_kind"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "gpu_hours_by_kind": json.dumps(r["gpu_hours_by_kind"])})


def report_command(
    ledger: Annotated[Path | None, typer.Argument(
        help="Ledger JSON from thrifty simulate --ledger; without it, the usage of the jobs on "
             "the thrifty server (--server).", show_default=False)] = None,
    by: Annotated[str, typer.Option(help="Group by job, user or team.")] = "team",
    since: Annotated[str | None, typer.Option(
        help="Only usage after this time: seconds, or 30m, 6h, 2d (simulated time from the "
             "start for a ledger file; ago, for the server's jobs).",
        show_default=False)] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write the rows as CSV.",
                                                  show_default=False)] = None,
    json_path: Annotated[Path | None, json_option("Also write the rows as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Draw spend and CO2 over time per team to this image (.png, .pdf, .svg).",
        show_default=False)] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """GPU-hours by kind, USD, kWh and kg CO2e per job, user or team: of the server's jobs, or
    of a simulation's ledger file."""
    try:
        if by not in ("job", "user", "team"):
            raise ThriftyError(f"--by must be job, user or team, got {by!r}")
        since_s = parse_since(since)
        if plot is not None and plot.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise ThriftyError(f"{plot}: --plot must end in .png, .pdf or .svg")
        for option, target in (("--csv", csv_path), ("--json", json_path), ("--plot", plot)):
            check_folder(target, option)
        runs = load_ledgers(ledger) if ledger is not None else []
    except ThriftyError as err:
        fail(err)
    origin, xlabel = 0.0, "simulated hours"
    if ledger is None:
        book = _live_ledger(server, token)
        now = float(book.meta.get("at", time.time()))
        if since_s is not None:
            since_s = now - since_s
        starts = [line.start_s for line in book.lines]
        origin = min(starts, default=now)
        xlabel = f"hours since {time.strftime('%Y-%m-%d %H:%M', time.localtime(origin))}"
        runs = [(f"{server} (prices {book.meta.get('prices')}, grid {book.meta.get('carbon')})",
                 book)]
    out = results_console()
    records: list[dict[str, Any]] = []
    group: GroupBy = by  # type: ignore[assignment]
    for label, book in runs:
        rows = report(book, group, since_s)
        window = "" if since_s is None else f", since {since}"
        out.print(report_table(rows, by, f"{label}: by {by}{window}"))
        records += [{"run": label, **r.to_dict()} for r in rows]
    if csv_path is not None:
        _write_csv(csv_path, records)
    if json_path is not None:
        json_path.write_text(json.dumps({"by": by, "since_s": since_s, "rows": records},
                                        indent=2) + "\n")
    if plot is not None:
        plot_spend(runs, plot, origin_s=origin, xlabel=xlabel)
        sys.stderr.write(f"wrote {plot}\n")

# --------------------------------------------------------------------------------------------
# thrifty advise
# --------------------------------------------------------------------------------------------


def advise_command(
    profile: Annotated[str | None, typer.Option(
        help="A profiled application (e.g. imagenet): advise on its whole training.",
        show_default=False)] = None,
    model: Annotated[Path | None, typer.Option(
        help="A job's GoodputModel as JSON (with its progress and declared length): advise on "
        "what is left.", show_default=False)] = None,
    catalogue: Annotated[Path | None, typer.Option(
        help="Cloud catalogue CSV (default: prices/cloud-gpu-prices.csv in the data folder).",
        show_default=False)] = None,
    prices: Annotated[Path | None, typer.Option(
        help="A price sheet TOML whose \\[\\[cloud]] offers (or catalogue) to use instead.",
        show_default=False)] = None,
    deadline: Annotated[float | None, typer.Option(help="Hours the job must finish within.",
                                                   show_default=False)] = None,
    budget: Annotated[float | None, typer.Option(help="USD the job may cost at most.",
                                                 show_default=False)] = None,
    max_gpus: Annotated[int, typer.Option(help="Most GPUs to consider.")] = 64,
    spot: Annotated[bool, typer.Option(help="Consider spot prices too.")] = True,
    cpu_slowdown: Annotated[float | None, typer.Option(
        help="Times slower than one T4 a CPU-only instance runs this job (when the model has "
        "no CPU measurements).", show_default=False)] = None,
    top: Annotated[int, typer.Option(help="Rows to show (Pareto front and recommendation are "
                                     "always shown).")] = 12,
    json_path: Annotated[Path | None, json_option("Also write every option as JSON.")] = None,
    data: DataOpt = None,
) -> None:
    """Rank CPU-only, each GPU kind and count, spot and on-demand by time and cost to finish."""
    from thrifty.accounting.advisor import Phase, advise
    from thrifty.accounting.prices import load_catalogue, load_price_sheet
    from thrifty.goodput import GoodputModel

    try:
        if (profile is None) == (model is None):
            raise ThriftyError("give exactly one of --profile APP or --model MODEL.json")
        if max_gpus < 1:
            raise ThriftyError(f"--max-gpus must be at least 1, got {max_gpus}")
        check_folder(json_path, "--json")
        root = resolve_data(data)
        if prices is not None:
            offers = load_price_sheet(prices).cloud
            if not offers:
                raise ThriftyError(f"{prices}: the price sheet lists no [[cloud]] offers")
        else:
            offers = load_catalogue(catalogue or root / "prices" / "cloud-gpu-prices.csv")
        if profile is not None:
            from thrifty.sim.advice import profile_phases
            from thrifty.sim.profiles import ProfileSet

            profile_set = ProfileSet(root, "sia")
            phases = profile_phases(profile_set.get(profile, ("aws", "rtx", "dgx-ext")))
            what = f"the {profile} profile (whole training)"
        else:
            assert model is not None
            if not model.is_file():
                raise ThriftyError(f"{model}: model file not found")
            try:
                raw = json.loads(model.read_text())
            except json.JSONDecodeError as err:
                raise ThriftyError(f"{model}: not JSON ({err.msg})") from None
            gm = GoodputModel.from_dict(raw.get("model", raw))
            if gm.target_progress is None:
                raise ThriftyError(f"{model}: the model declares no length (target_progress); "
                                   "the advisor needs to know how much work is left")
            phases = [Phase(gm, max(gm.target_progress - gm.progress, 0.0))]
            what = f"{model.name} ({gm.progress:.0f} of {gm.target_progress:.0f} steps done)"
        advice = advise(phases, offers, deadline_h=deadline, budget_usd=budget,
                        max_gpus=max_gpus, spot=spot, cpu_slowdown=cpu_slowdown)
    except ThriftyError as err:
        fail(err)
    out = results_console()
    out.print(advice_table(advice, what, top, deadline))
    note = None if deadline is None else deadline_note(advice, deadline)
    if note:
        out.print(note)
    for reason in advice.reasons:
        out.print(f"• {reason}")
    for skipped in advice.skipped:
        out.print(f"[dim]not ranked: {skipped}[/]")
    if json_path is not None:
        json_path.write_text(json.dumps({
            "options": [{"label": o.label, "instance_type": o.offer.instance_type,
                         "provider": o.offer.provider, "instances": o.instances, "spot": o.spot,
                         "gpus": o.gpus, "kind": o.kind, "hours": o.hours,
                         "usd_per_hour": o.usd_per_hour, "usd": o.usd, "pareto": o.pareto,
                         "meets_deadline": o.meets_deadline,
                         "recommended": o is advice.recommended} for o in advice.options],
            "reasons": advice.reasons, "skipped": advice.skipped}, indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
    app.command("advise")(advise_command)

"""`thrifty job JOB`: one job in full, so that its owner sees why it waits or how it failed.

Its state and reason (the scheduler's words for why it waits, or how it ended), what the last
scheduling round proposed and granted it, its events, and the tail of its newest attempt's logs,
or, for a job that has never started, that it never did and why.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from thrifty.cli.cluster import age, api_client
from thrifty.cli.options import ServerOpt, TokenOpt
from thrifty.cli.output import results_console
from thrifty.cluster.states import STATE_COLOURS

TAIL_LINES = 20
EVENTS_SHOWN = 20


def _allocation(alloc: dict[str, Any] | None) -> str:
    if not alloc:
        return "nothing"
    gpus = alloc.get("gpus", {})
    where = ", ".join(f"{node}: {count}" for node, count in gpus.items())
    return f"{sum(gpus.values())} × {alloc.get('kind', '?')} ({where})"


def _decision(last: dict[str, Any] | None) -> str:
    if not last:
        return "none yet (no scheduling round has seen it)"
    proposed, granted = last.get("proposed"), last.get("granted")
    if proposed == granted:
        return f"granted {_allocation(granted)}"
    return f"the policy proposed {_allocation(proposed)}; granted {_allocation(granted)}"


def job_command(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="The API's answer as JSON.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """One job: state, why it waits or failed, its events, the last decision and its log tail."""
    with api_client(server, token) as client:
        job = client.job(job_id)
        tail = job.get("log_tail")
        if tail is None and job["attempts"]:
            logs = client.logs(job_id, tail=TAIL_LINES)
            tail = "\n".join(f"--- {part['file']} ---\n{part['text'].rstrip()}"
                             for part in logs["ranks"])
    if as_json:
        print(json.dumps(job, indent=2))
        return
    out = results_console()
    now = time.time()
    colour = STATE_COLOURS.get(job["state"], "")
    out.print(f"[bold]{escape(job['id'])}[/] ({escape(job['name'])}, {escape(job['owner'])}, "
              f"team {escape(job['team'])}): [{colour}]{job['state']}[/]", soft_wrap=True)
    out.print(f"reason: {escape(job.get('reason') or '—')}", soft_wrap=True)
    out.print(f"last decision: {escape(_decision(job.get('last_decision')))}", soft_wrap=True)
    events = job["events"][-EVENTS_SHOWN:]
    if events:
        table = Table(header_style="bold", title="events")
        for header in ("when", "kind", "message"):
            table.add_column(header)
        for event in events:
            table.add_row(f"{age(now - event['at'])} ago", escape(event["kind"]),
                          escape(event["message"]))
        out.print(table)
    if not job["attempts"]:
        out.print(f"never started: {escape(job.get('reason') or job['state'])}", soft_wrap=True)
        return
    out.print(f"[bold]log tail[/] (attempt {len(job['attempts'])}):", soft_wrap=True)
    out.print(escape(tail or "(the log is empty)"), soft_wrap=True, highlight=False)

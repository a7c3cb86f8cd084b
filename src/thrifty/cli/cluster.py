"""The cluster commands: `thrifty server` runs the control plane and its API; `submit`, `jobs`,
`job`, `logs`, `cancel` and `cluster` talk to it over HTTP (`users` lives in cli/users.py).

The cluster surface lives here in one place; `thrifty.cli` only registers these commands.
Heavy imports (the store, the API, uvicorn) happen inside the commands that need them, so
that `thrifty jobs` starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from thrifty.cli.options import ServerOpt, TokenOpt
from thrifty.cli.output import EXIT_BAD_INPUT, fail, results_console
from thrifty.cli.spec_help import spec_help
from thrifty.cluster.states import ACTIVE_STATES, STATE_COLOURS, TERMINAL_STATES
from thrifty.errors import ThriftyError
from thrifty.settings import DEFAULT_SERVER

EXIT_FAILED = 1  # the server is down or said no
DEFAULT_PORT = 8470
FOLLOW_POLL_S = 1.0


def _fail(err: BaseException | str, code: int = EXIT_FAILED) -> NoReturn:
    fail(err, code)


def _spec_problems(problems: Sequence[tuple[str, str]], where: str) -> NoReturn:
    """A rejected spec, one line per wrong field, so it is fixed in one go."""
    sys.stderr.write(f"error: {where}: invalid job spec, {len(problems)} problem(s):\n")
    for field, message in problems:
        sys.stderr.write(f"  {field}: {message}\n")
    raise typer.Exit(EXIT_BAD_INPUT)


@contextlib.contextmanager
def api_client(server: str | None, token: str | None) -> Iterator[Any]:
    """A client whose errors end the command with one line (and the right exit status). The
    server and token are the flags, else the settings' (`--server` at its default counts as not
    given, so that THRIFTY_SERVER and the settings file apply)."""
    from thrifty.cluster.client import ApiError, Client, find_token
    from thrifty.settings import Settings

    settings = Settings.load()
    url = settings.server if server in (None, DEFAULT_SERVER) else server
    client = Client(url, find_token(settings, token), token_file=settings.token_file)
    try:
        yield client
    except ApiError as err:
        if err.problems:
            _spec_problems(err.problems, f"the server at {client.server} rejected it")
        _fail(err)
    except ThriftyError as err:
        _fail(err)
    finally:
        client.close()


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def age(seconds: float) -> str:
    """A duration as people say it: seconds, minutes, then hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------
# thrifty server
# --------------------------------------------------------------------------------------------


def server_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    executor: Annotated[str, typer.Option(
        help="Where replicas run: local (processes on this machine) or ray (a Ray cluster).")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="--executor ray: the Ray cluster's address, host:port (default: $RAY_ADDRESS).",
        show_default=False)] = None,
    policy: Annotated[str, typer.Option(help="Scheduling policy.")] = "thrifty",
    interval: Annotated[float, typer.Option(help="Seconds between scheduling rounds.")] = 30.0,
    slots: Annotated[int | None, typer.Option(
        help="--executor local without GPUs: CPU slots (default: one per core).",
        show_default=False)] = None,
    db: Annotated[str | None, typer.Option(
        help="Database URL (default: $THRIFTY_DB_URL, else SQLite in THRIFTY_HOME).",
        show_default=False)] = None,
    prices: Annotated[Path | None, typer.Option(
        help="Price sheet (TOML) that usage is billed with (default: the built-in rates).",
        show_default=False)] = None,
    carbon: Annotated[str | None, typer.Option(
        help="Grid the cluster draws from: a country code (DEU, FRA, USA, ...: CodeCarbon's "
             "yearly means) or gCO2/kWh (default: the price sheet's region, else DEU).",
        show_default=False)] = None,
    budgets: Annotated[Path | None, typer.Option(
        help="Budget file (TOML): caps per team and user that the scheduling loop enforces.",
        show_default=False)] = None,
    isolation: Annotated[str | None, typer.Option(
        help="--executor local: sandbox (each job in a bubblewrap sandbox that sees only its own "
             "folder; the default) or none (jobs can read what the server's OS user can).",
        show_default=False)] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the control plane: the scheduling loop and the REST API (docs at /docs)."""
    from thrifty.cluster.api.server import describe, open_server, unpriced_nodes
    from thrifty.settings import Settings

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"--log-level must be debug, info, warning or error, got {log_level!r}",
              EXIT_BAD_INPUT)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))  # one line per migration
    out = results_console()
    with contextlib.ExitStack() as cleanup:  # closed in reverse, on errors too
        try:
            served = cleanup.enter_context(open_server(
                Settings.load(), host, port, executor, policy, interval, slots=slots,
                ray_address=ray_address, db=db, prices=prices, carbon=carbon, budgets=budgets,
                isolation=isolation))
        except ThriftyError as err:
            _fail(err, EXIT_BAD_INPUT)
        except Exception as err:  # e.g. a Ray cluster that does not answer: one line, no trace
            _fail(f"cannot start the {executor} executor: {err}")
        if served.admin_token_file is not None:
            out.print(f"Created user [bold]admin[/]; its API token is in "
                      f"{served.admin_token_file} (the CLI reads it from there).", soft_wrap=True)
        for problem in unpriced_nodes(served):
            out.print(f"[yellow]warning[/]: {escape(problem)}; `thrifty report` fails until "
                      "--prices gives that kind a price and watts", soft_wrap=True)
        try:
            served.run(log_level.lower(), before=lambda: out.print(
                describe(served, policy, interval), soft_wrap=True))
        finally:
            out.print("stopping the scheduling loop; running jobs go on and are adopted on "
                      "restart", soft_wrap=True)


# --------------------------------------------------------------------------------------------
# thrifty submit, jobs, cancel
# --------------------------------------------------------------------------------------------


def submit_command(
    spec: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON.", show_default=False)],
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a job; prints its id. A relative working_dir is taken from the spec's folder."""
    from thrifty.cluster.bodies import check_yaml_shape
    from thrifty.cluster.spec import SpecError, load_spec

    try:
        if spec.is_file():  # too deep a file would be a RecursionError in the YAML parser
            check_yaml_shape(spec.read_text())
        job_spec = load_spec(spec)
    except SpecError as err:
        if [field for field, _ in err.problems] == ["(spec)"]:  # the file as a whole: one line
            _fail(f"{spec}: {err.problems[0][1]}", EXIT_BAD_INPUT)
        _spec_problems(err.problems, str(spec))
    except (OSError, UnicodeDecodeError) as err:
        _fail(f"{spec}: cannot read it as text: {err}", EXIT_BAD_INPUT)
    except ThriftyError as err:
        _fail(err, EXIT_BAD_INPUT)
    body = job_spec.model_dump(mode="json", exclude_defaults=True)
    body["working_dir"] = job_spec.working_dir
    with api_client(server, token) as client:
        job = client.submit(body)
    sys.stderr.write(f"submitted {job['name']} as {job['owner']} ({job['state']}); follow it "
                     f"with `thrifty logs -f {job['id']}`\n")
    print(job["id"])


def jobs_table(jobs: Sequence[dict[str, Any]], now: float) -> Table:
    table = Table(header_style="bold")
    for header in ("id", "owner", "state", "replicas", "batch", "epoch", "goodput (samples/s)",
                   "restarts", "age"):
        table.add_column(header, justify="left" if header in ("id", "owner", "state")
                         else "right")
    for job in jobs:
        state = job["state"]
        if job.get("cancel_requested") and state not in TERMINAL_STATES:
            state = f"{state} (cancelling)"
        table.add_row(
            job["id"], job["owner"], f"[{STATE_COLOURS.get(job['state'], '')}]{state}[/]",
            str(job["replicas"] or "—"), _fmt(job["batch_size"]), _fmt(job["epoch"]),
            _fmt(job["goodput"]), str(job["restarts"]), age(now - job["submitted_at"]),
        )
    return table


def jobs_command(
    all_states: Annotated[bool, typer.Option(
        "--all-states", "-a", help="Finished jobs too (default: queued and running ones).")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Your jobs (an admin's: everyone's), newest first."""
    if limit < 1:
        _fail(f"--limit must be at least 1, got {limit}", EXIT_BAD_INPUT)
    with api_client(server, token) as client:
        jobs = list(client.iter_jobs(() if all_states else ACTIVE_STATES, limit=limit))
    if as_json:
        print(json.dumps(jobs, indent=2))
        return
    out = results_console()
    if not jobs:
        out.print("no jobs" if all_states else "no queued or running jobs (--all-states shows "
                                                "finished ones)")
        return
    out.print(jobs_table(jobs, time.time()))


def cancel_command(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids.", show_default=False)],
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Cancel jobs: a queued one ends at once, a running one in the next scheduling round."""
    with api_client(server, token) as client:
        for job_id in job_ids:
            job = client.cancel(job_id)
            if job["state"] in TERMINAL_STATES:
                print(f"{job_id}: {job['state']}")
            else:
                print(f"{job_id}: cancel requested; it stops in the next scheduling round")


# --------------------------------------------------------------------------------------------
# thrifty logs
# --------------------------------------------------------------------------------------------


def _write(text: str, rank: int, ranks: int, at_line_start: dict[int, bool]) -> None:
    """A replica's text; with several replicas every line starts with its rank."""
    if not text:
        return
    if ranks > 1:
        lines = text.splitlines(keepends=True)
        prefix = f"[rank {rank}] "
        text = "".join((prefix if i > 0 or at_line_start.get(rank, True) else "") + line
                       for i, line in enumerate(lines))
    at_line_start[rank] = text.endswith("\n")
    sys.stdout.write(text)
    sys.stdout.flush()


def logs_command(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing until the job ends.")] = False,
    tail: Annotated[int | None, typer.Option(
        help="Only the last N lines of each replica's log.", show_default=False)] = None,
    attempt: Annotated[int | None, typer.Option(
        help="This attempt's logs (default: the newest).", show_default=False)] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """A job's logs: every replica of its newest attempt (lines prefixed by rank if several)."""
    if tail is not None and tail < 0:
        _fail(f"--tail must be 0 or more, got {tail}", EXIT_BAD_INPUT)
    with api_client(server, token) as client:
        first = client.logs(job_id, tail=tail, attempt=attempt)
        starts: dict[int, bool] = {}
        for part in first["ranks"]:
            _write(part["text"], part["rank"], len(first["ranks"]), starts)
        if not follow:
            if first["attempt"] is None:
                sys.stderr.write(f"{job_id} has not started yet ({first['state']})\n")
            return
        try:
            _follow(client, job_id, first, starts)
        except KeyboardInterrupt:
            return


def _follow(client: Any, job_id: str, first: dict[str, Any], starts: dict[int, bool]) -> None:
    """Poll for new bytes per replica; move on to a newer attempt when the job restarts; stop
    once the job has ended and everything it wrote is printed."""
    number = first["attempt"]
    offsets = {part["rank"]: part["end"] for part in first["ranks"]}
    if number is None:
        sys.stderr.write(f"{job_id} is {first['state']}; waiting for it to start\n")
    while True:
        time.sleep(FOLLOW_POLL_S)
        head = client.logs(job_id, tail=0)
        done = head["state"] in TERMINAL_STATES
        if number is not None:
            _drain(client, job_id, number, offsets, starts,
                   [p["rank"] for p in head["ranks"]] if head["attempt"] == number else None)
        if head["attempt"] is not None and head["attempt"] != number:
            number, offsets = head["attempt"], {}
            sys.stdout.write(f"--- attempt {number} ---\n")
            starts.clear()
            _drain(client, job_id, number, offsets, starts, [p["rank"] for p in head["ranks"]])
        if done:
            sys.stderr.write(f"{job_id} {head['state']}\n")
            return


def _drain(client: Any, job_id: str, number: int, offsets: dict[int, int],
           starts: dict[int, bool], ranks: list[int] | None) -> None:
    for rank in sorted(set(offsets) | set(ranks or ())):
        while True:
            part = client.logs(job_id, attempt=number, rank=rank, offset=offsets.get(rank, 0))
            if not part["ranks"]:
                break
            got = part["ranks"][0]
            _write(got["text"], rank, max(len(offsets), len(ranks or ()), 1), starts)
            offsets[rank] = got["end"]
            if not got["more"]:
                break


# --------------------------------------------------------------------------------------------
# thrifty cluster
# --------------------------------------------------------------------------------------------


def queue_table(queue: Sequence[dict[str, Any]], queued: int, now: float) -> Table:
    """The waiting jobs the server showed, longest waiting first."""
    shown = f"the {len(queue)} longest waiting of {queued}" if queued > len(queue) else "queue"
    table = Table(title=f"Waiting ({shown})", title_justify="left", header_style="bold")
    for header in ("id", "owner", "name", "requested", "waiting"):
        table.add_column(header, overflow="fold")
    for job in queue:
        low, high = job["min_replicas"], job["max_replicas"]
        count = str(high) if job["mode"] == "rigid" or low == high else f"{low}-{high}"
        kinds = ", ".join(job["gpu_kinds"]) or "any kind"
        since = time.strftime("%H:%M:%S", time.localtime(job["waiting_since"]))
        table.add_row(job["id"], escape(job["owner"]), escape(job["name"]),
                      f"{count} × {escape(kinds)} ({job['mode']})",
                      f"{age(now - job['waiting_since'])} (since {since})")
    return table


def cluster_command(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """The nodes and how much of each running jobs hold, the queue, and the last round."""
    with api_client(server, token) as client:
        info = client.cluster()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    out = results_console()
    out.print(f"[bold]{info['executor']} executor[/] · policy {info['policy']} · a round every "
              f"{info['interval_s']:g} s", soft_wrap=True)
    table = Table(header_style="bold")
    for header in ("node", "kind", "GPUs", "in use", "free"):
        table.add_column(header, justify="left" if header in ("node", "kind") else "right")
    for node in info["nodes"]:
        table.add_row(escape(node["name"]), node["gpu_kind"], str(node["gpus"]),
                      str(node["used"]), str(max(node["gpus"] - node["used"], 0)))
    out.print(table)
    jobs = info["jobs"]
    counts = (f"[{STATE_COLOURS.get(s, '')}]{n} {s}[/]" for s, n in jobs.items())
    out.print("jobs: " + ", ".join(counts))
    if info.get("queue"):
        out.print(queue_table(info["queue"], jobs.get("queued", 0), time.time()))
    last = info["last_round"]
    if last is None:
        out.print("no scheduling round yet")
    else:
        out.print(f"{info['rounds']} round(s); the last took {last['total_s'] * 1e3:.1f} ms "
                  f"(policy {last['policy_s'] * 1e3:.1f} ms), started {last['started']}, "
                  f"stopped {last['stopped']}, saw {last['finished']} finish")


def register(app: typer.Typer) -> None:
    from thrifty.cli.job import job_command  # modules of their own, which import this one
    from thrifty.cli.users import register as register_users

    app.command("server")(server_command)
    app.command("submit", help=f"{submit_command.__doc__}\n\n{spec_help()}")(submit_command)
    app.command("jobs")(jobs_command)
    app.command("job")(job_command)
    app.command("logs")(logs_command)
    app.command("cancel")(cancel_command)
    app.command("cluster")(cluster_command)
    register_users(app)

"""Options more than one command takes, declared once: the same flag reads the same everywhere.

Each factory returns a `typer.Option` whose help starts with what the option means for that
command (`what`) and ends with the shared default, so that `--help` stays specific without the
declaration being written again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.policy.registry import POLICIES
from thrifty.settings import DEFAULT_SERVER, Settings
from thrifty.sim.cluster import BUILTIN_CLUSTERS

DATA_DEFAULT = "(default: $THRIFTY_DATA or shared/data nearby)"


def data_option(what: str = "Folder of measured profiles") -> Any:
    """`--data`: the measured-data folder."""
    return typer.Option(help=f"{what} {DATA_DEFAULT}.", show_default=False)


def workers_option(what: str = "Parallel processes", each: str = "pair") -> Any:
    """`--workers`: processes of the batch runner."""
    return typer.Option(help=f"{what} (default: one per {each}, at most one per CPU).",
                        show_default=False)


def cluster_option(what: str = "Built-in cluster") -> Any:
    """`--cluster/-c`: a built-in cluster's name or a cluster TOML file; required."""
    return typer.Option("--cluster", "-c", show_default=False,
                        help=f"{what} ({', '.join(BUILTIN_CLUSTERS)}) or a cluster TOML file.")


def json_option(help: str) -> Any:
    """`--json PATH`: also write the command's results as JSON."""
    return typer.Option("--json", help=help, show_default=False)


DataOpt = Annotated[Path | None, data_option()]
PolicyOpt = Annotated[str, typer.Option(
    "--policy", "-p", help=f"Comma-separated policies to compare ({', '.join(POLICIES)}).")]
IntervalOpt = Annotated[float, typer.Option(help="Seconds between scheduling rounds.")]
ServerOpt = Annotated[str | None, typer.Option(
    "--server", show_default=False,
    help=f"The thrifty server's URL (default: ${Env.SERVER}, else {DEFAULT_SERVER}).")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", show_default=False,
    help=f"API token (default: ${Env.TOKEN}, else the file {Env.HOME}/token).")]


def resolve_data(data: Path | None, settings: Settings | None = None) -> Path:
    """The measured-data folder: `--data` if given, else the settings' (`THRIFTY_DATA`, the
    settings file, or `shared/data` nearby)."""
    if data is not None and not (data / "pollux").is_dir():
        raise ThriftyError(
            f"{data}: --data must be the folder holding pollux/ (and sia/) profiles, "
            "usually shared/data"
        )
    return (settings or Settings.load()).with_data(data).require_data()


def check_folder(path: Path | None, flag: str) -> None:
    """An output file's folder, created when missing (as `--json results/x.json` in a fresh
    checkout expects), before a long run rather than after it; one that cannot be created is
    reported now, naming the flag."""
    if path is None or path.parent.is_dir():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ThriftyError(
            f"{path}: cannot create the {flag} folder {path.parent} ({err.strerror or err}); "
            "choose a path in a folder you can write"
        ) from None

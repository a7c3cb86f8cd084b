"""Options more than one command takes, declared once: the same flag reads the same everywhere.

Each factory returns a `typer.Option` whose help starts with what the option means for that
command (`what`) and ends with the shared default, so that `--help` stays specific without the
declaration being written again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.policy.registry import POLICIES
from thrifty.settings import DEFAULT_SERVER, Settings
from thrifty.sim.cluster import BUILTIN_CLUSTERS

# Help texts are rich markup: a literal square bracket, as in a TOML table's name, is written
# `\\[autoscale]`, else rich takes it for a style and drops it.


class _FlagsWithoutMetavar:
    """Typer's rich help shows `<bool>` beside on/off flags as if they took a value; a flag
    (including --help) gets an empty metavar, so the column stays blank as click's own help
    has it."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(_FlagsWithoutMetavar, TyperCommand):
    """Every thrifty command's class (set by `use_command_classes`)."""


class Group(_FlagsWithoutMetavar, TyperGroup):
    """Every thrifty command group's class (set by `use_command_classes`)."""


def use_command_classes(app: typer.Typer) -> None:
    """Give every command and group registered on `app`, and below it, the classes above."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
    for group in app.registered_groups:
        if not isinstance(group.cls, type):  # typer's placeholder for "not given"
            group.cls = Group
        if group.typer_instance is not None:
            use_command_classes(group.typer_instance)


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

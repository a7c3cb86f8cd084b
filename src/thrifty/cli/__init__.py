"""The `thrifty` command line: thin typer commands over the packages below.

Each command module registers its own commands on `app`: `simulate` and `demo` (the simulator),
`workload` (generated clusters and workloads), `accounting` (`report`, `advise`) and the cluster
commands (`server`, `submit`, `jobs`, ...). Everything a user can get wrong is reported as one
line on stderr with exit status 2 (`output.fail`); a run that fails after starting exits with 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from thrifty import __version__
from thrifty.cli import accounting, cluster, demo, simulate, tune, workload
from thrifty.cli.options import Group, use_command_classes

app = typer.Typer(
    name="thrifty",
    help="Cheaper deep-learning compute: goodput scheduling, simulation and accounting.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"thrifty {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Cheaper deep-learning compute: goodput scheduling, simulation and accounting."""


simulate.register(app)  # thrifty simulate
demo.register(app)  # thrifty demo
workload.register(app)  # thrifty workload generate
accounting.register(app)  # thrifty report, thrifty advise
cluster.register(app)  # thrifty server, submit, jobs, logs, cancel, cluster, users
tune.register(app)  # thrifty tune simulate, thrifty tune validate
use_command_classes(app)  # after every command: flags show no metavar

__all__ = ["app"]

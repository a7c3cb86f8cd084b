"""How every thrifty command prints results and reports a problem, shared by the CLI modules."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

EXIT_BAD_INPUT = 2  # the user can fix it: one line on stderr names what and where


def results_console() -> Console:
    """Rich console for results; wide when piped, so that logs keep the table on one line."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


def fail(err: BaseException | str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Report a problem as one line on stderr and exit with `code`."""
    message = " ".join(str(err).split())
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)

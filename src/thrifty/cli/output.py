"""How every thrifty command prints results and reports a problem, shared by the CLI modules."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import NoReturn

import typer
from rich.console import Console

from thrifty.sim.batch import Outcome, failures

EXIT_BAD_INPUT = 2  # the user can fix it: one line on stderr names what and where
EXIT_RUN_FAILED = 1  # a simulation or demo job failed after starting (reported per pair)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


PIPED_WIDTH = 4096  # characters: wider than any table, so none is narrowed when piped


def results_console() -> Console:
    """Rich console for results. Piped (`| cat`, a log file), it is as wide as any table, so
    that every row keeps all its columns whole on one line; in a terminal, its width."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, PIPED_WIDTH)
    return console


def fail(err: BaseException | str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Report a problem as one line on stderr and exit with `code`."""
    message = " ".join(str(err).split())
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def interrupted() -> NoReturn:
    """Ctrl-C during a long run: one word instead of a traceback."""
    sys.stderr.write("interrupted\n")
    raise typer.Exit(EXIT_INTERRUPTED) from None


def report_failures(outcomes: Sequence[Outcome]) -> bool:
    """One `error:` line per failed pair on stderr; True when there was any."""
    lines = failures(outcomes)
    for line in lines:
        sys.stderr.write(f"error: {line}\n")
    return bool(lines)


SMALLEST_SHOWN = 0.01  # below this a figure reads "<0.01": a bill of 4.36e-07 USD is nothing


def _below_shown(value: float) -> str | None:
    """`<0.01` (or `>-0.01`) for a figure too small to matter, never an exponent; 0 stays 0."""
    if value == 0 or abs(value) >= SMALLEST_SHOWN:
        return None
    return f"<{SMALLEST_SHOWN:g}" if value > 0 else f">-{SMALLEST_SHOWN:g}"


def _figure(value: float, small: str) -> str:
    """Whole above 100, one decimal above 10, else `small`'s format; never an exponent."""
    if not math.isfinite(value):
        return "–"
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return _below_shown(value) or format(value, small)


def fmt_metric(value: float) -> str:
    """About three significant figures, without switching to exponents for small values."""
    return _figure(value, ".2f")


def fmt_amount(value: float) -> str:
    """Hours, USD, kWh and kg in the accounting tables: whole above 100, else three figures,
    and `<0.01` for what rounds to nothing."""
    return _figure(value, ".3g")

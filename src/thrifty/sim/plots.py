"""One figure comparing policies: the JCT distribution and the GPUs each kept busy over time.

Per workload, a column of two panels: above, the empirical CDF of job completion times (log
hours, since JCTs span minutes to days); below, the GPUs allocated at each scheduling round with
the cluster's capacity as a dashed line. Each policy keeps one colour in every panel and the
legend is shared. matplotlib is imported only when a figure is drawn, with the non-interactive
Agg backend, so that the CLI starts fast and works without a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from thrifty.errors import ThriftyError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_COLUMNS = 4  # workloads side by side before the layout wraps into another pair of rows
PANEL_INCHES = (4.2, 3.0)


@dataclass(frozen=True)
class PlotRun:
    """What a figure needs from one (policy, workload) run."""

    policy: str
    workload: str
    jcts_s: Sequence[float]
    gpus_in_use: Sequence[tuple[float, int]]  # (simulated seconds, GPUs allocated) per round


def check_plot_path(path: Path) -> None:
    """Fail before any simulation if the figure could not be written where asked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise ThriftyError(
            f"{path}: --plot format {suffix or '(none)'!r} is not supported; use a suffix "
            f"such as .png, .pdf or .svg (known: {', '.join(sorted(formats))})"
        )
    if not path.parent.is_dir():
        raise ThriftyError(f"{path}: --plot folder {path.parent} does not exist")


def comparison_figure(
    runs: Sequence[PlotRun], capacity: int | None = None, title: str | None = None
) -> Figure:
    """The figure itself, for saving or inspection; `capacity` is the cluster's GPU count."""
    if not runs:
        raise ThriftyError("nothing to plot: no simulation finished")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    workloads = list(dict.fromkeys(r.workload for r in runs))
    policies = list(dict.fromkeys(r.policy for r in runs))
    colours = {p: f"C{i % 10}" for i, p in enumerate(policies)}
    columns = min(len(workloads), MAX_COLUMNS)
    blocks = math.ceil(len(workloads) / columns)
    fig = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * 2 * blocks),
                 layout="constrained")
    grid = fig.add_gridspec(2 * blocks, columns)
    for index, workload in enumerate(workloads):
        block, column = divmod(index, columns)
        cdf = fig.add_subplot(grid[2 * block, column])
        busy = fig.add_subplot(grid[2 * block + 1, column])
        for run in (r for r in runs if r.workload == workload):
            _draw_cdf(cdf, run, colours[run.policy])
            _draw_in_use(busy, run, colours[run.policy])
        cdf.set_title(workload)
        cdf.set_xlabel("job completion time (h, log)")
        cdf.set_ylabel("fraction of jobs")
        busy.set_xlabel("simulated time (h)")
        busy.set_ylabel("GPUs in use")
        if capacity:
            busy.axhline(capacity, color="0.5", linestyle="--", linewidth=1, label="capacity")
            busy.set_ylim(0, capacity * 1.05)
    handles = [
        matplotlib.lines.Line2D([], [], color=colours[p], linewidth=2, label=p) for p in policies
    ]
    if capacity:
        handles.append(matplotlib.lines.Line2D(
            [], [], color="0.5", linestyle="--", linewidth=1, label=f"capacity ({capacity} GPUs)"
        ))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7))
    if title:
        fig.suptitle(title)
    return fig


def _draw_cdf(ax: Axes, run: PlotRun, colour: str) -> None:
    hours = np.sort(np.asarray(run.jcts_s, dtype=float)) / 3600
    hours = np.maximum(hours, 1e-3)  # log axis: a zero-length job sits at the left edge
    fraction = np.arange(1, len(hours) + 1) / len(hours)
    ax.step(hours, fraction, where="post", color=colour, label=run.policy)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="major", alpha=0.3)


def _draw_in_use(ax: Axes, run: PlotRun, colour: str) -> None:
    if not run.gpus_in_use:
        return
    series = np.asarray(run.gpus_in_use, dtype=float)
    ax.step(series[:, 0] / 3600, series[:, 1], where="post", color=colour,
            linewidth=1, label=run.policy)
    ax.grid(True, alpha=0.3)


def save_comparison(
    runs: Sequence[PlotRun], path: Path, capacity: int | None = None, title: str | None = None
) -> Figure:
    """Draw and write the figure (format by suffix); returns it for callers that inspect it."""
    fig = comparison_figure(runs, capacity, title)
    fig.savefig(path, dpi=120)
    return fig

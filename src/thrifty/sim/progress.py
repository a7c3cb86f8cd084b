"""Progress bars for a batch of simulations: one bar per pair, counting its finished jobs.

Kept apart from the batch runner so that the runner stays free of any display: `run_pairs` talks
to whatever follows its `BatchProgress` protocol, and this is the one a person watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class ProgressBars:
    """Rich bars on `console` (default: stderr, so that tables on stdout stay clean)."""

    def __init__(self, console: Console | None = None):
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("jobs"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
        )
        self._tasks: list[TaskID] = []
        self._names: list[str] = []
        self._totals: list[int] = []
        self._ended: set[int] = set()

    def __enter__(self) -> ProgressBars:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start(self, names: Sequence[str], totals: Sequence[int]) -> None:
        """One bar per pair, the names padded to one width so that the bars line up."""
        width = max(map(len, names), default=0)
        self._names, self._totals = list(names), list(totals)
        self._tasks = [
            self._progress.add_task(name.ljust(width), total=total)
            for name, total in zip(names, totals, strict=True)
        ]

    def update(self, index: int, done: int, total: int) -> None:
        """Jobs finished so far; an update that arrives after the pair ended is dropped."""
        if index not in self._ended:
            self._progress.update(self._tasks[index], completed=done, total=total)

    def end(self, index: int, ok: bool) -> None:
        """A finished pair's bar ends full; a failed one says so."""
        self._ended.add(index)
        if ok:
            self._progress.update(self._tasks[index], completed=self._totals[index])
        else:
            self._progress.update(self._tasks[index],
                                  description=f"{self._names[index]} [red]failed[/]")

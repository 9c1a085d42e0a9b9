"""Progress bars (rich) with counts, rate and ETA; silent in quiet mode (CI, logs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_quiet = os.environ.get("PERSYN_QUIET", "") not in {"", "0"}


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    if not _quiet:
        console.print(message)


class RateColumn(ProgressColumn):
    """Items per second over the task so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  -.-/s" if speed is None else f"{speed:7.2f}/s")


class Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)


@contextmanager
def bar(description: str, total: int) -> Iterator[Bar]:
    if _quiet or total == 0:
        yield Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield Bar(progress, progress.add_task(description, total=total))

"""Progress bars (rich) with counts, rate and ETA; silent in quiet mode (CI, logs).

Every long loop (generation, learnability, prompt encoding, router epochs, and the HTTP and
Ray backends) wraps itself in `bar(description, total)` and calls `advance(n)`. Bars
opened while another is live (a backend inside an executor, worker threads) join the same
display as extra rows, because rich allows one live display per console.

Quiet mode (`--quiet` or `PERSYN_QUIET=1`) turns off these bars and `log`, and also the
tqdm bars of transformers, datasets and huggingface_hub (e.g. "Converting and
de-quantizing GGUF tensors"): those libraries read environment variables when they are
first imported, so quiet mode sets the variables and switches off the bars of any of them
that is already imported. `quiet_env()` gives the same variables for worker processes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
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
from rich.text import Text

from persyn.redact import redact_text

console = Console(stderr=True)

# What third-party libraries read at import time to silence their progress bars and chatter.
_QUIET_ENV = {
    "TQDM_DISABLE": "1",  # plain tqdm, e.g. transformers' GGUF de-quantisation bar
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # the hub's "Retrying in 1s [Retry 1/5]" and the like
    "HF_HUB_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
}

_quiet = False
_env_before: dict[str, str | None] = {}
_lock = threading.Lock()
_live: Progress | None = None
_open_bars = 0


def quiet_from_env() -> bool:
    return os.environ.get("PERSYN_QUIET", "").strip().lower() not in {"", "0", "false", "no"}


def is_quiet() -> bool:
    return _quiet


def quiet_env() -> dict[str, str]:
    """Environment variables that make a worker process as quiet as this one."""
    return {"PERSYN_QUIET": "1", **_QUIET_ENV} if _quiet else {}


def set_quiet(quiet: bool) -> None:
    """Turn quiet mode on or off for persyn and the libraries it drives."""
    global _quiet
    _quiet = quiet
    if quiet:
        for key, value in _QUIET_ENV.items():
            _env_before.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        _silence_imported_libraries()
    else:
        for key, value in _env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _env_before.clear()


def _silence_imported_libraries() -> None:
    # Only libraries already imported: importing them here would cost seconds for nothing,
    # and the environment variables cover a later import.
    if "transformers" in sys.modules:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
        huggingface_hub.utils.logging.set_verbosity_error()


def log(message: str) -> None:
    if not _quiet:
        console.print(redact_text(message))


def warn(message: str) -> None:
    """Something the user should know even in quiet mode (CI and log files keep it): a
    damaged artifact dropped, rows failed within the error budget, a setting adjusted."""
    # soft_wrap: one line however narrow the terminal (grep-able in CI logs)
    console.print(
        f"[yellow]warning:[/yellow] {escape(redact_text(message))}",
        highlight=False,
        soft_wrap=True,
    )


class RateColumn(ProgressColumn):
    """Items per second: rich's recent-window speed, else the average so far (a task
    advanced in one or two large steps has no windowed speed)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.completed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text("  -.-/s" if speed is None else f"{speed:7.2f}/s")


class Bar:
    """One row of the live display; `advance` is safe to call from worker threads."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)


def _new_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextmanager
def bar(description: str, total: int) -> Iterator[Bar]:
    """A bar of `total` items: count, percentage, rate, elapsed time and ETA."""
    global _live, _open_bars
    if _quiet or total == 0:
        yield Bar(None, None)
        return
    with _lock:
        if _live is None:
            _live = _new_progress()
            _live.start()
        progress = _live
        _open_bars += 1
    task = progress.add_task(description, total=total)
    try:
        yield Bar(progress, task)
    finally:
        with _lock:
            _open_bars -= 1
            if _open_bars == 0:
                progress.stop()
                _live = None


set_quiet(quiet_from_env())

"""Progress bars (rich) with counts, rate and ETA; silent in quiet mode (CI, logs).

Every long loop (generation, learnability, prompt encoding, router epochs, and the HTTP and
Ray backends) wraps itself in `bar(description, total)` and calls `advance(n)`. Bars
opened while another is live (a backend inside an executor, worker threads) join the same
display as extra rows, because rich allows one live display per console.

Other libraries' bars and chatter (transformers, datasets, huggingface_hub, vLLM, httpx:
"Converting and de-quantizing GGUF tensors", "HTTP Request: POST ...") are off in the CLI
unless verbose mode is on (`persyn --verbose`, `PERSYN_VERBOSE=1`): persyn's own bars
already say how far a run is. Python callers choose with `set_verbose`; importing persyn
changes nothing. Those libraries read environment variables when they are first imported,
so the variables are set and the bars of any of them already imported are switched off.
Quiet mode (`--quiet`, `PERSYN_QUIET=1`) also turns off persyn's bars and
`log`. `quiet_env()` gives the same variables for worker processes.
"""

from __future__ import annotations

import logging
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
    "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM's per-request and engine INFO lines
}
# Loggers that print a line per request at INFO (when an application configures logging).
_CHATTY_LOGGERS = ("httpx", "httpcore", "openai", "urllib3")

_quiet = False
_verbose = False
_env_before: dict[str, str | None] = {}
_lock = threading.Lock()
_live: Progress | None = None
_open_bars = 0


def _flag_from_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no"}


def quiet_from_env() -> bool:
    return _flag_from_env("PERSYN_QUIET")


def verbose_from_env() -> bool:
    return _flag_from_env("PERSYN_VERBOSE")


def is_quiet() -> bool:
    return _quiet


def is_verbose() -> bool:
    return _verbose


def libraries_quiet() -> bool:
    """Whether other libraries' bars and logs are off: unless verbose (and not quiet)."""
    return _quiet or not _verbose


def quiet_env() -> dict[str, str]:
    """Environment variables that make a worker process as quiet as this one."""
    env = {"PERSYN_QUIET": "1"} if _quiet else {}
    if _verbose:
        env["PERSYN_VERBOSE"] = "1"
    return {**env, **_QUIET_ENV} if libraries_quiet() else env


def set_quiet(quiet: bool) -> None:
    """Turn quiet mode (no persyn bars or logs, no library output) on or off."""
    global _quiet
    _quiet = quiet
    _apply_to_libraries()


def set_verbose(verbose: bool) -> None:
    """Turn verbose mode (other libraries' bars and logs shown) on or off."""
    global _verbose
    _verbose = verbose
    _apply_to_libraries()


def _apply_to_libraries() -> None:
    quiet = libraries_quiet()
    if quiet:
        for key, value in _QUIET_ENV.items():
            _env_before.setdefault(key, os.environ.get(key))
            os.environ[key] = value
    else:
        for key, value in _env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _env_before.clear()
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    _set_imported_libraries(quiet)


def _set_imported_libraries(quiet: bool) -> None:
    # Only libraries already imported: importing them here would cost seconds for nothing,
    # and the environment variables cover a later import. Loud is the libraries' default
    # (bars on, warnings and above).
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if quiet:
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        else:
            hf_logging.enable_progress_bar()
            hf_logging.set_verbosity_warning()
    if "datasets" in sys.modules:
        import datasets

        if quiet:
            datasets.disable_progress_bars()
            datasets.logging.set_verbosity_error()
        else:
            datasets.enable_progress_bars()
            datasets.logging.set_verbosity_warning()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub_utils

        if quiet:
            hub_utils.disable_progress_bars()
            hub_utils.logging.set_verbosity_error()
        else:
            hub_utils.enable_progress_bars()
            hub_utils.logging.set_verbosity_warning()
    if "vllm" in sys.modules:
        logging.getLogger("vllm").setLevel(logging.WARNING if quiet else logging.INFO)


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


# Importing persyn leaves other libraries as they are (a notebook keeps its bars) unless
# PERSYN_QUIET asks; the CLI decides for every command (`set_verbose`).
_quiet, _verbose = quiet_from_env(), verbose_from_env()
if _quiet:
    _apply_to_libraries()

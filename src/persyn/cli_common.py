"""What the `persyn` command modules share: the console, the common arguments and
options, loading a config with `--set` overrides, and one-line user errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from persyn.answer_store import AnswerStoreError
from persyn.config import ConfigError, RunConfig, load_config
from persyn.data import DataError
from persyn.pipeline import Run, StageError, validate
from persyn.redact import redact_text
from persyn.store import RunDirBusy

console = Console()

ConfigArg = Annotated[Path, typer.Argument(help="YAML run config.")]
RunDirOpt = Annotated[str | None, typer.Option("--run-dir", help="Override the config's run_dir.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set rewards.alpha=0.5 (repeatable)."),
]
ReplaceOpt = Annotated[
    bool, typer.Option("--replace", help="Reuse a run directory another config made.")
]
StudentOpt = Annotated[
    str | None,
    typer.Option(
        "--student",
        help="With `students:` in the config: this student only (and the shared stages, "
        "if not done); the other students' folders are left as they are.",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", envvar="PERSYN_QUIET", help="No progress bars or logs (CI, log files)."
    ),
]


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    import yaml

    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def load_cli_config(
    config: Path, overrides: list[str] | None, max_cost: float | None = None
) -> RunConfig:
    values = parse_overrides(overrides)
    if max_cost is not None:
        values["max_cost"] = max_cost
    cfg = load_config(config, values)
    validate(cfg)
    return cfg


@contextmanager
def user_errors(*extra: type[Exception]) -> Iterator[None]:
    """Turn the errors a user can fix into one red line and exit code 2 (no traceback)."""
    try:
        yield
    except (ConfigError, DataError, StageError, RunDirBusy, AnswerStoreError, *extra) as err:
        fail(err)


def fail(err: Exception) -> None:
    # One line, secrets scrubbed, and printed as text: a message quoting "[...]" (a file's
    # line, a list of teachers) must not be read as console markup and lose words.
    line = " ".join(redact_text(str(err)).split())
    console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def open_run(cfg: RunConfig, run_dir: str | None, student: str | None) -> Run:
    """The run a one-stage command works on: the config's, or with `students:` the student
    --student names (its folder; the shared stages stay at the top)."""
    run = Run.open(cfg, run_dir)
    if student is None and cfg.students:
        raise ConfigError(
            f"the config has several students ({', '.join(cfg.student_names)}); "
            "name one with --student"
        )
    return run if student is None else run.for_student(student)


def one_student(cfg: RunConfig, command: str) -> RunConfig:
    """`cfg`, which must have one student: `command` does not take `students:` yet."""
    if cfg.students:
        raise ConfigError(
            f"persyn {command}: not yet for a config with several students (`students:`); "
            "use a config with one (`student:`)"
        )
    return cfg

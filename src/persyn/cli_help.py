"""What `persyn --help` says first, the order it lists the commands in, the global
options (`--version`, `--verbose`), and how every command reports an error a user can fix
(`user_errors`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from persyn.answer_store import AnswerStoreError
from persyn.config import ConfigError
from persyn.data import DataError
from persyn.pipeline import STAGES, StageError
from persyn.redact import redact_text
from persyn.report.card import persyn_version
from persyn.store import RunDirBusy

# The top-level help is the user's first page: what persyn does, the commands in order.
USAGE = """Build a distillation dataset for YOUR student model: a router picks, for each
prompt, the teacher whose answer the student learns best from (PerSyn), so only one
teacher answers each prompt.

\b
Typical use:
  persyn demo                   the offline demo, nothing downloaded
  persyn validate my.yaml       check a config, its prompts and teachers; loads no model
  persyn run my.yaml            every stage; rerun it to resume
  persyn inspect RUN_DIR        which stages are done, rows, errors, where files are
  persyn report RUN_DIR         an HTML report with plots
  persyn train-student my.yaml  fine-tune the student on the dataset
  persyn evaluate my.yaml       measure it

Each stage also runs alone. --verbose shows other libraries' progress bars and logs."""

# Commands listed in the order a user meets them, each stage in pipeline order.
COMMAND_ORDER = ["demo", "validate", "run", "inspect", "report", "import", *STAGES, "eval-router"]
COMMAND_ORDER += ["train-student", "evaluate", "experiment"]
COMMAND_ORDER += ["store"]


class UserOrder(TyperGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(super().list_commands(ctx), key=COMMAND_ORDER.index)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"persyn {persyn_version()}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version."),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        envvar="PERSYN_VERBOSE",
        help="Show other libraries' progress bars and logs (transformers, datasets, vLLM, HTTP).",
    ),
]

console = Console()


@contextmanager
def user_errors(*extra: type[Exception]) -> Iterator[None]:
    """Turn the errors a user can fix into one red line and exit code 2 (no traceback)."""
    try:
        yield
    except (ConfigError, DataError, StageError, RunDirBusy, AnswerStoreError, *extra) as err:
        _fail(err)


def _fail(err: Exception) -> None:
    # One line, secrets scrubbed, and printed as text: a message quoting "[...]" (a file's
    # line, a list of teachers) must not be read as console markup and lose words.
    line = " ".join(redact_text(str(err)).split())
    console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)

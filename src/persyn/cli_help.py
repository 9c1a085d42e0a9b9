"""What `persyn --help` says first, the order it lists the commands in, and the global
options (`--version`, `--verbose`)."""

from __future__ import annotations

from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from persyn.pipeline import STAGES
from persyn.report.card import persyn_version

# The top-level help is the user's first page: what persyn does, the commands in order.
USAGE = """Build a distillation dataset for YOUR student model: a router picks, for each
prompt, the teacher whose answer the student learns best from (PerSyn), so only one
teacher answers each prompt.

\b
Typical use:
  persyn demo                   the offline demo, nothing downloaded
  persyn validate my.yaml       check a config, its prompts and teachers; loads no model
  persyn plan my.yaml           estimate generations, tokens, money: against Generate then Select
  persyn run my.yaml            every stage; rerun it to resume
  persyn inspect RUN_DIR        which stages are done, rows, errors, where files are
  persyn report RUN_DIR         an HTML report with plots
  persyn train-student my.yaml  fine-tune the student on the dataset
  persyn evaluate my.yaml       measure it

Each stage also runs alone. --verbose shows other libraries' progress bars and logs."""

# Commands listed in the order a user meets them, each stage in pipeline order.
COMMAND_ORDER = ["demo", "validate", "run", "inspect", "report", "import", *STAGES, "eval-router"]
COMMAND_ORDER += ["train-student", "evaluate", "experiment"]
COMMAND_ORDER.insert(COMMAND_ORDER.index("run"), "plan")
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


# Options of several commands, kept here so that `cli.py` stays a list of commands.
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        help="Spend cap (config `max_cost`): stop before the money spent on teachers and "
        "judges could pass it; rerun with a higher cap to continue.",
    ),
]
PilotOpt = Annotated[
    int,
    typer.Option(
        "--pilot",
        min=0,
        help="Ask each teacher N calibration prompts first and estimate from their tokens "
        "and time (the answers are cached and reused by the run).",
    ),
]

"""`persyn store ...`: look into, export and prune the answer store (`persyn.answer_store`)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from persyn.answer_store import STORE_ENV, AnswerStore, AnswerStoreError, store_location
from persyn.cli_common import console, user_errors
from persyn.store import write_jsonl

store_app = typer.Typer(
    no_args_is_help=True,
    help="The answer store every run shares: what it holds, export, prune.",
)

StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help=f"The store file; default: ${STORE_ENV}, else the user cache's."),
]
TeacherOpt = Annotated[str | None, typer.Option("--teacher", help="Only this teacher name.")]


def _open(path: Path | None) -> AnswerStore:
    """The existing store (never a new empty one: a typo must not look like an empty store)."""
    where = store_location(str(path) if path is not None else None)
    if where is None:
        raise AnswerStoreError(f"the answer store is off (${STORE_ENV}=none); pass --store FILE")
    if not where.is_file():
        raise AnswerStoreError(f"{where}: no answer store there yet (a run creates it)")
    return AnswerStore(where)


def _day(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d")


@store_app.command()
def stats(store: StoreOpt = None) -> None:
    """Answers per teacher (name, model, settings fingerprint) and the size on disk."""
    with user_errors():
        answers = _open(store)
        rows = answers.stats()
        size = answers.size_bytes()
    for r in rows:
        console.print(
            f"{r['teacher']}  model {r['model']}  settings {r['fp'][:12]}: {r['answers']} "
            f"answers, {r['completion_tokens']} output tokens, written "
            f"{_day(r['first'])}..{_day(r['last'])}",
            highlight=False,
            soft_wrap=True,
        )
    total = sum(r["answers"] for r in rows)
    console.print(f"{answers.path}: {total} answers, {size / 1e6:.1f} MB on disk", soft_wrap=True)


@store_app.command()
def export(
    output: Annotated[Path, typer.Argument(help="JSONL file to write.")],
    teacher: TeacherOpt = None,
    store: StoreOpt = None,
) -> None:
    """Write the answers as a dataset `calibration.source` imports (preset persyn-store).

    One record per answer (the newest per teacher and prompt); import it with
    `calibration.source: {path: OUTPUT, preset: persyn-store}`."""
    with user_errors():
        answers = _open(store)
        n = write_jsonl(output, answers.export_rows(teacher))
    console.print(
        f"export: {n} answers to {output}; import them with "
        f"calibration.source: {{path: {output}, preset: persyn-store}}",
        soft_wrap=True,
    )


@store_app.command()
def prune(
    teacher: TeacherOpt = None,
    fingerprint: Annotated[
        str | None,
        typer.Option("--fingerprint", help="Only settings with this fingerprint (prefix)."),
    ] = None,
    older_than: Annotated[
        float | None, typer.Option("--older-than", help="Only answers older than this many days.")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Delete answers by teacher, settings fingerprint and/or age.

    Every filter given must match (at least one); runs that need them again ask the
    teacher."""
    with user_errors(ValueError):
        answers = _open(store)
        age = older_than * 86400 if older_than is not None else None
        started = time.time()
        gone = answers.prune(teacher=teacher, fp=fingerprint, older_than_s=age)
    console.print(
        f"prune: {gone} answers deleted in {time.time() - started:.1f}s; "
        f"{answers.size_bytes() / 1e6:.1f} MB on disk",
        soft_wrap=True,
    )

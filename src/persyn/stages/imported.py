"""Imported calibration in the run: what `prepare` and `calibrate` do when
`calibration.source` is set (reading and checking the data: `persyn.calibration_import`).

- prepare: the data's prompts are the calibration set (`calibration.size` of them, drawn by
  `calibration.strategy` when there are more). They join the prompt table; a data prompt
  whose id is also in `prompts` is that prompt (its text must match) and is calibrated,
  not routed. Every other prompt of `prompts` is routed. The answers to the calibration
  prompts go to `imported.jsonl`, their normalised scores to the prompts' meta.
- calibrate: those answers are appended to `generations/<teacher>.jsonl` under the
  teacher's fingerprint, with `provenance: imported`, `source` and `source_row`, so every
  later stage reads them as generated rows and nothing is generated for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.calibration_import import (
    load_import,
    quality_table,
    with_imported_scores,
)
from persyn.calibration_select import select_calibration
from persyn.data import DataError
from persyn.progress import log
from persyn.stages.common import teacher_fingerprint
from persyn.teachers.base import Prompt

if TYPE_CHECKING:
    from persyn.run import Run


def import_calibration(run: Run, prompts: list[Prompt]) -> tuple[list[Prompt], list[str]]:
    """The prompt table with the imported calibration prompts, and the calibration ids."""
    cfg = run.cfg
    assert cfg.calibration.source is not None
    path = cfg.calibration.source.path
    prompt_field = cfg.calibration.source.resolved().prompt
    data = load_import(cfg)
    ids = [p.id for p in data.prompts]
    calibration = select_calibration(cfg.calibration, ids, [p.text for p in data.prompts])
    chosen = set(calibration)
    scores = quality_table([a for a in data.answers if a.prompt_id in chosen])
    by_id = {p.id: p for p in prompts}
    source = cfg.prompts.source or cfg.prompts.builtin

    added = []
    for p in data.prompts:
        if p.id not in chosen:
            continue
        known = by_id.get(p.id)
        if known is None:
            added.append(with_imported_scores(p, scores))
        elif known.text != p.text:
            raise DataError(
                f"{data.prompt_rows[p.id]}: {prompt_field}: prompt {p.id!r} "
                f"has another text in prompts ({source})"
            )
    table = [with_imported_scores(p, scores) for p in prompts] + added
    run.store.write_imported([a.to_row() for a in data.answers if a.prompt_id in chosen])
    notes = [f"imported {len(ids)} prompts and {len(data.answers)} answers from {path}"]
    if data.ignored_models:
        notes.append(f"ignored data models not in the pool: {', '.join(data.ignored_models)}")
    if data.skipped:
        notes.append(f"skipped {data.skipped} duplicate prompts or empty responses")
    log("prepare: " + "; ".join(notes))
    return table, calibration


def write_imported_rows(run: Run) -> dict[str, int]:
    """Append the imported answers to the generation logs; per teacher, how many answers
    it has from the data. An answer already in the log with the same text is left alone (a
    rerun writes nothing); another text there (the data changed, or the teacher had
    generated one) is replaced by the data's, and its scores are recomputed (score caches
    are keyed by the prompt and response they scored)."""
    cfg = run.cfg
    source = cfg.calibration.source
    assert source is not None
    rows = run.store.imported()
    counts = dict.fromkeys(cfg.teacher_names, 0)
    for t in cfg.teachers:
        fp, rowlog = teacher_fingerprint(t), run.store.generation_log(t.name)
        new: list[dict[str, Any]] = []
        replaced = 0
        for r in rows:
            if r["teacher"] != t.name:
                continue
            counts[t.name] += 1
            old = rowlog.get((r["prompt_id"], fp))
            if old is not None and old["error"] is None:
                if old["text"] == r["text"]:
                    continue
                replaced += 1
            new.append(
                {
                    "prompt_id": r["prompt_id"],
                    "teacher": t.name,
                    "fp": fp,
                    "text": r["text"],
                    "prompt_tokens": 0,
                    "completion_tokens": r["completion_tokens"],
                    "error": None,
                    "provenance": "imported",
                    "source": source.path,
                    "source_row": r["source_row"],
                    "model": r["model"],
                    "imported_score": r["raw_score"],
                }
            )
        rowlog.append(new)
        if replaced:
            log(f"calibrate: teacher {t.name!r}: {replaced} answers replaced by the data's")
    return counts

"""Calibration answers from a parallel-response dataset (`calibration.source`).

Public datasets already hold what calibration generates: many models answering the same
prompts (Magpie-100K-Generator-Zoo, UltraFeedback, Nectar, MixInstruct, LLMRouterBench).
This module reads one, maps its columns and model names onto the teacher pool and checks
it; `persyn.stages.imported` puts the result into the run (the data's prompts become the
calibration set, its answers the calibration rows of the generation logs).

Layouts (which one follows from the mapping fields, see `CalibrationSource`):
- wide: one row per prompt, a column per model (`responses: {teacher: column}`, optional
  `scores: {teacher: column}`); a null cell means that model did not answer the prompt;
- list: one row per prompt, a list of answers (`list_column`, each entry with
  `model_field`, `response_field`, optional `score_field`);
- records: one row per answer (`model_field`, `response_field`), from JSONL/Parquet or
  from JSON files holding `{records_field: [...]}`, where the model may be the name of the
  folder holding the file (LLMRouterBench: `<dataset>/<model>/results.json`).
Rows of the records layout are grouped into prompts by id (the `id` column, or a hash of
the prompt text when there is none).

Scores (the `imported` quality signal): a number per answer, mapped to [0, 1] by min-max
over `score_range` (default: the smallest and largest score in the import), flipped when
`score_direction` is `lower` (a rank); a constant score maps to 0.5. Within-prompt
normalisation comes after, as for every signal.

Bad data stops the import with one line naming the file, the row and the field: a missing
teacher column, a missing or empty response, a score that is not a number, a duplicate
prompt, a model with fewer than two answers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from persyn.calibration_source import source_rows
from persyn.config import CalibrationSource, RunConfig
from persyn.data import DataError
from persyn.teachers.base import Prompt, can_generate

# Prompt meta key of the normalised imported scores: {response digest: score}. The quality
# signal sees (prompt, response text) only, and a score belongs to the text it graded.
IMPORTED_QUALITY = "imported_quality"


def response_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- fingerprint: the import is an input of `prepare` (and of `imported` quality rows) ---
def _get(obj: Any, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted path, e.g. `scores.bartscore`."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False, None
        obj = obj[part]
    return True, obj


# -- mapping and checks ---------------------------------------------------------------
@dataclass
class ImportedAnswer:
    prompt_id: str
    model: str  # the data's name
    teacher: str  # the pool's name
    text: str
    raw_score: float | None
    completion_tokens: int
    source_row: str  # file and row (and list entry), for provenance and error messages
    score: float | None = None  # raw_score mapped to [0, 1]

    def to_row(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class ImportedData:
    prompts: list[Prompt]
    prompt_rows: dict[str, str]  # prompt id -> where it was first read
    answers: list[ImportedAnswer]
    ignored_models: list[str] = field(default_factory=list)
    skipped: int = 0  # duplicates and empty responses left out (`strict: false`)


@dataclass
class _Cell:
    """One answer as read, before the model is mapped to a teacher."""

    label: str  # the response's place in the row, e.g. `completions[2].response`
    model: str
    text: Any
    score: Any
    score_label: str  # the score's place, for its error message
    tokens: Any
    teacher: str | None = None  # known up front in the wide layout (`responses`)


class _Reader:
    """Turns rows into prompts and answers, checking each as it goes."""

    def __init__(self, cfg: RunConfig) -> None:
        assert cfg.calibration.source is not None
        self.src = cfg.calibration.source.resolved()
        self.layout = self.src.layout()
        self.pool = set(cfg.teacher_names)
        self.max_chars = cfg.prompts.max_prompt_chars
        self.prompts: dict[str, tuple[Prompt, str]] = {}  # id -> (prompt, where first seen)
        self.cells: dict[tuple[str, str], str] = {}  # (prompt id, teacher) -> where
        self.answers: list[ImportedAnswer] = []
        self.ignored: set[str] = set()
        self.skipped = 0

    def teacher(self, model: str) -> str | None:
        return self.src.models.get(model, model if model in self.pool else None)

    def prompt(self, where: str, row: dict[str, Any]) -> Prompt:
        src = self.src
        found, text = _get(row, src.prompt)
        if not found:
            raise DataError(f"{where}: missing field {src.prompt!r} (calibration.source.prompt)")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: field {src.prompt!r} is empty or not text")
        if src.input:
            _, extra = _get(row, src.input)
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra}"
        if len(text) > self.max_chars:
            raise DataError(
                f"{where}: prompt has {len(text)} characters > prompts.max_prompt_chars "
                f"{self.max_chars}; shorten it or raise the limit"
            )
        if src.id:
            found, value = _get(row, src.id)
            if not found or value in (None, ""):
                raise DataError(f"{where}: missing field {src.id!r} (calibration.source.id)")
            pid = str(value)
        else:
            pid = f"imp-{response_digest(text)}"
        reference = None
        if src.reference:
            _, ref = _get(row, src.reference)
            reference = None if ref in (None, "") else str(ref)
        return Prompt(pid, [{"role": "user", "content": text}], src.kind, reference, {})

    def row_cells(self, where: str, row: dict[str, Any]) -> list[_Cell]:
        src = self.src
        if self.layout == "wide":
            cells = []
            for teacher, column in src.responses.items():
                if column not in row:
                    raise DataError(
                        f"{where}: missing column {column!r} (calibration.source.responses"
                        f"[{teacher!r}])"
                    )
                if row[column] is None:
                    continue  # this model did not answer this prompt
                score_column = src.scores.get(teacher, "")
                if score_column and score_column not in row:
                    raise DataError(
                        f"{where}: missing column {score_column!r} (calibration.source.scores"
                        f"[{teacher!r}])"
                    )
                score = row[score_column] if score_column else None
                cells.append(_Cell(column, column, row[column], score, score_column, None, teacher))
            return cells
        if self.layout == "list":
            assert src.list_column is not None
            found, entries = _get(row, src.list_column)
            if not found or not isinstance(entries, list):
                raise DataError(f"{where}: field {src.list_column!r} must be a list of answers")
            return [
                self.entry_cell(where, f"{src.list_column}[{k}]", entry, None)
                for k, entry in enumerate(entries)
            ]
        return [self.entry_cell(where, "", row, row.get("__folder__"))]

    def entry_cell(self, where: str, label: str, entry: Any, folder: str | None) -> _Cell:
        src = self.src
        at = f"{where}: {label}" if label else where
        if not isinstance(entry, dict):
            raise DataError(f"{at}: expected an object with the answer's fields")
        if src.model_field:
            found, model = _get(entry, src.model_field)
            if not found or not isinstance(model, str) or not model:
                raise DataError(f"{at}: missing field {src.model_field!r} (model_field)")
        else:
            model = folder
        assert src.response_field is not None and model is not None
        found, text = _get(entry, src.response_field)
        if not found:
            raise DataError(f"{at}: missing field {src.response_field!r} (response_field)")
        prefix = f"{label}." if label else ""
        score = _get(entry, src.score_field)[1] if src.score_field else None
        tokens = _get(entry, src.tokens_field)[1] if src.tokens_field else None
        return _Cell(
            f"{prefix}{src.response_field}",
            model,
            text or "",
            score,
            f"{prefix}{src.score_field}",
            tokens,
        )

    def add_row(self, where: str, row: dict[str, Any]) -> None:
        prompt = self.prompt(where, row)
        seen = self.prompts.get(prompt.id)
        if seen is not None and self.layout != "records":
            if self.src.strict:
                raise DataError(f"{where}: duplicate prompt {prompt.id!r} (first at {seen[1]})")
            self.skipped += 1
            return
        if seen is not None and seen[0].text != prompt.text:
            raise DataError(f"{where}: prompt {prompt.id!r} has another text at {seen[1]}")
        if seen is None:
            self.prompts[prompt.id] = (prompt, where)
        for cell in self.row_cells(where, row):
            self.add_cell(where, prompt.id, cell)

    def add_cell(self, where: str, pid: str, cell: _Cell) -> None:
        teacher = cell.teacher or self.teacher(cell.model)
        if teacher is None:
            self.ignored.add(cell.model)
            return
        at = f"{where}: {cell.label}" if cell.label else where
        if not isinstance(cell.text, str):
            raise DataError(f"{at}: response is not text")
        if not cell.text.strip() or (pid, teacher) in self.cells:
            if self.src.strict:
                first = self.cells.get((pid, teacher))
                why = (
                    f"duplicate answer of teacher {teacher!r} (first at {first})"
                    if cell.text.strip()
                    else f"empty response from model {cell.model!r}"
                )
                raise DataError(f"{at}: {why}")
            self.skipped += 1
            return
        self.cells[(pid, teacher)] = at
        tokens = cell.tokens if isinstance(cell.tokens, int) and cell.tokens >= 0 else None
        score_at = f"{where}: {cell.score_label}"
        score = _number(score_at, cell.score)
        scale = self.src.score_range
        if score is not None and scale is not None and not scale[0] <= score <= scale[1]:
            raise DataError(
                f"{score_at}: score {score:g} outside calibration.source.score_range "
                f"[{scale[0]:g}, {scale[1]:g}]"
            )
        self.answers.append(
            ImportedAnswer(
                pid,
                cell.model,
                teacher,
                cell.text,
                score,
                # Without a token count, the word count stands in (routing's cost estimate).
                len(cell.text.split()) if tokens is None else tokens,
                at,
            )
        )


def _number(at: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DataError(f"{at}: score {value!r} is not a number")
    try:
        x = float(value)
    except ValueError:
        raise DataError(f"{at}: score {value!r} is not a number") from None
    if not math.isfinite(x):
        raise DataError(f"{at}: score {value!r} is not a finite number")
    return x


def load_import(cfg: RunConfig) -> ImportedData:
    """Every prompt and answer of `calibration.source`, mapped to the pool and checked."""
    reader = _Reader(cfg)
    src = reader.src
    for where, row in source_rows(src):
        reader.add_row(where, row)
    if not reader.prompts:
        raise DataError(f"{src.path}: no rows")
    _check_coverage(cfg, reader)
    _normalise_scores(src, reader.answers)
    return ImportedData(
        [p for p, _ in reader.prompts.values()],
        {pid: where for pid, (_, where) in reader.prompts.items()},
        reader.answers,
        sorted(reader.ignored),
        reader.skipped,
    )


def _check_coverage(cfg: RunConfig, reader: _Reader) -> None:
    """Every teacher needs answers to compare: a model with one answer is a mapping slip,
    a teacher with none is left out of every pair (unless it generates them)."""
    src = reader.src
    per_teacher: dict[str, list[ImportedAnswer]] = {}
    for a in reader.answers:
        per_teacher.setdefault(a.teacher, []).append(a)
    for teacher, answers in per_teacher.items():
        if len(answers) < 2:
            a = answers[0]
            raise DataError(
                f"{a.source_row}: model {a.model!r} (teacher {teacher!r}) answers only this "
                "row; a teacher needs answers to at least two prompts"
            )
    for t in cfg.teachers:
        can_fill = src.fill_missing and can_generate(t)
        if t.name not in per_teacher and not can_fill:
            raise DataError(
                f"{src.path}: no answers for teacher {t.name!r}; map a data model to it "
                "(calibration.source.models or responses), or give it a generation backend "
                "and set calibration.source.fill_missing"
            )


def _normalise_scores(src: CalibrationSource, answers: list[ImportedAnswer]) -> None:
    raw = [a.raw_score for a in answers if a.raw_score is not None]
    if not raw:
        return
    lo, hi = src.score_range or (min(raw), max(raw))
    for a in answers:
        if a.raw_score is None:
            continue
        value = 0.5 if hi == lo else (a.raw_score - lo) / (hi - lo)
        a.score = 1.0 - value if src.score_direction == "lower" else value


def quality_table(answers: list[ImportedAnswer]) -> dict[str, dict[str, float]]:
    """Per prompt id: {response digest: normalised score} (the mean where two answers to a
    prompt have the same text), for the `imported` quality signal."""
    sums: dict[str, dict[str, list[float]]] = {}
    for a in answers:
        if a.score is not None:
            sums.setdefault(a.prompt_id, {}).setdefault(response_digest(a.text), []).append(a.score)
    return {pid: {d: sum(v) / len(v) for d, v in table.items()} for pid, table in sums.items()}


def with_imported_scores(prompt: Prompt, scores: dict[str, dict[str, float]]) -> Prompt:
    """`prompt` with its imported scores (from `quality_table`) in its meta, if it has any."""
    if prompt.id not in scores:
        return prompt
    meta = {**prompt.meta, IMPORTED_QUALITY: scores[prompt.id]}
    return Prompt(prompt.id, prompt.messages, prompt.kind, prompt.reference, meta)

"""Prompts from rows: every row becomes a `Prompt` (id, chat messages, kind, reference,
meta), or a generated set (a built-in name or the user's `module:function`).

A bad row stops the load with one line naming the file, the row and the field, before any
model loads. Columns are read by the `prompts.*_field` settings, or, where one is unset, by
their usual names (`REFERENCE_COLUMNS`, `KIND_COLUMN`, `META_COLUMN`, `IFEVAL_COLUMNS`); a
column read by neither is named in a warning, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from persyn.config import PromptsConfig
from persyn.data.rows import DataError, iter_rows, json_problem
from persyn.plugins import PROMPT_SETS, resolve
from persyn.progress import warn
from persyn.teachers.base import Prompt


def _text(where: str, row: dict[str, Any], field: str) -> str:
    if field not in row:
        raise DataError(
            f"{where}: missing field {field!r} (set prompts.prompt_field, or "
            f"prompts.messages_field for chat messages; the row's columns: {', '.join(row)})"
        )
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r} is empty or not text")
    return value


def _json_cell(where: str, row: dict[str, Any], field: str) -> Any:
    """A structured value; in a CSV cell it is JSON text (an empty cell is none)."""
    value = row.get(field)
    if not isinstance(value, str) or value.lstrip()[:1] not in {"[", "{"}:
        return None if isinstance(value, str) and not value.strip() else value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: field {field!r}: {json_problem(err)}") from None


def _messages(where: str, row: dict[str, Any], field: str) -> list[dict[str, str]]:
    value = _json_cell(where, row, field)
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field {field!r} must be a non-empty list of messages")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: {field}[{k}] needs 'role' and text 'content'")
        if m.get("role") not in {"system", "user", "assistant"}:
            raise DataError(f"{where}: {field}[{k}].role must be system, user or assistant")
        out.append({"role": m["role"], "content": m["content"]})
    # Distillation prompts end with the user's turn: drop a trailing assistant answer.
    while out and out[-1]["role"] == "assistant":
        out.pop()
    if not out or not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise DataError(f"{where}: field {field!r} has no non-empty user message")
    return out


def builtin_prompts(spec: str, num_prompts: int, seed: int) -> list[Prompt]:
    """A generated prompt set: a built-in name or the user's `module:function`, called as
    `fn(num_prompts, seed) -> list[Prompt]`."""
    prompts = resolve(spec, "prompts.builtin", PROMPT_SETS)(num_prompts, seed)
    # User code: check what it returned here, not as a crash in a later stage.
    if not isinstance(prompts, list) or not all(isinstance(p, Prompt) for p in prompts):
        raise DataError(f"prompts.builtin {spec!r}: must return a list of Prompt")
    if not prompts:
        raise DataError(f"prompts.builtin {spec!r}: no prompts returned")
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise DataError(f"prompts.builtin {spec!r}: duplicate id {p.id!r}")
        seen.add(p.id)
    return prompts


# Columns read when the matching `prompts.*_field` is not set (README "Prompts files").
# A reference: the first of these with a value, most specific first (a worked `solution`
# is read only when the row has no short answer).
REFERENCE_COLUMNS = ("reference", "answer", "target", "solution")
# The prompt's kind (math or instruction). Not `task` or `type`: those usually hold free
# categories ("coding", "qa") that are neither.
KIND_COLUMN = "kind"
# Metadata: a `meta` object, and IFEval's own top-level columns, which the `ifeval`
# quality signal reads from `meta`.
META_COLUMN = "meta"
IFEVAL_COLUMNS = ("instruction_id_list", "kwargs")
# Unread columns named in the warning; the rest are counted.
_SHOWN_COLUMNS = 8


def load_prompts(cfg: PromptsConfig) -> list[Prompt]:
    if cfg.builtin:
        return builtin_prompts(cfg.builtin, cfg.num_prompts, cfg.seed)[: cfg.limit]
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    unread: set[str] = set()  # columns no setting reads, in any row
    repeats = _RepeatedTexts()
    for index, (where, row) in enumerate(iter_rows(cfg)):
        if cfg.limit and len(prompts) >= cfg.limit:
            break
        read: set[str | None] = set()
        if cfg.messages_field:
            messages = _messages(where, row, cfg.messages_field)
            read.add(cfg.messages_field)
        else:
            messages = [{"role": "user", "content": _text(where, row, cfg.prompt_field)}]
            read.add(cfg.prompt_field)
        chars = sum(len(m["content"]) for m in messages)
        if chars > cfg.max_prompt_chars:
            raise DataError(
                f"{where}: prompt has {chars} characters > prompts.max_prompt_chars "
                f"{cfg.max_prompt_chars}; shorten it or raise the limit"
            )
        if cfg.id_field and cfg.id_field in row:
            pid = str(row[cfg.id_field])
            if not pid.strip():
                raise DataError(f"{where}: field {cfg.id_field!r} (prompts.id_field) is empty")
            read.add(cfg.id_field)
        elif cfg.id_field and cfg.id_field != "id":
            raise DataError(f"{where}: missing field {cfg.id_field!r} (prompts.id_field)")
        else:
            pid = f"row-{index:07d}"
        if pid in seen:
            raise DataError(f"{where}: duplicate id {pid!r} (first seen at {seen[pid]})")
        seen[pid] = where
        kind_column = cfg.kind_field or (KIND_COLUMN if KIND_COLUMN in row else None)
        # an empty cell (CSV) or null means the default kind
        kind = (row.get(kind_column) or cfg.kind) if kind_column else cfg.kind
        if kind not in {"math", "instruction"}:
            default = "" if cfg.kind_field else " (a column named kind is the prompt's kind)"
            raise DataError(f"{where}: field {kind_column!r} must be math or instruction{default}")
        reference_column = _reference_column(row, cfg.reference_field)
        reference = None
        if reference_column is not None and row.get(reference_column) not in (None, ""):
            reference = str(row[reference_column])
        elif kind == "math":  # instruction rows are verified without one
            raise DataError(_missing_reference(where, cfg))
        meta = _meta(where, row, cfg.meta_field)
        read |= {kind_column, reference_column}
        read |= {cfg.meta_field} if cfg.meta_field else {META_COLUMN, *IFEVAL_COLUMNS}
        unread |= row.keys() - read
        prompt = Prompt(pid, messages, kind, reference, meta)
        repeats.add(where, prompt)
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{cfg.source}: no prompts found")
    if unread:
        _warn_unread(cfg, unread)
    repeats.report(cfg.source)
    return prompts


def _reference_column(row: dict[str, Any], field: str | None) -> str | None:
    """The column holding the row's reference: `prompts.reference_field`, else the first
    of `REFERENCE_COLUMNS` with a value."""
    if field is not None:
        return field
    return next((c for c in REFERENCE_COLUMNS if row.get(c) not in (None, "")), None)


def _missing_reference(where: str, cfg: PromptsConfig) -> str:
    if cfg.reference_field:
        return (
            f"{where}: missing field {cfg.reference_field!r} (the reference answer every math "
            "prompt needs; prompts.reference_field)"
        )
    return (
        f"{where}: a math prompt needs a reference answer, and none of the columns "
        f"{', '.join(REFERENCE_COLUMNS)} has one; name the column that holds it in "
        "prompts.reference_field"
    )


def _meta(where: str, row: dict[str, Any], field: str | None) -> dict[str, Any]:
    """`prompts.meta_field`'s object; unset: the `meta` column's, plus IFEval's
    `instruction_id_list`/`kwargs` columns (where the `ifeval` signal reads them)."""
    value = _json_cell(where, row, field or META_COLUMN)
    if value is not None and not isinstance(value, dict):
        default = "" if field else " (a column named meta is the prompt's metadata)"
        raise DataError(f"{where}: field {field or META_COLUMN!r} must be an object{default}")
    meta = dict(value or {})
    if field is None:
        for column in IFEVAL_COLUMNS:
            cell = _json_cell(where, row, column)
            if cell is not None:
                meta[column] = cell
    return meta


def _warn_unread(cfg: PromptsConfig, unread: set[str]) -> None:
    names = sorted(unread)
    shown = ", ".join(names[:_SHOWN_COLUMNS])
    more = f" and {len(names) - _SHOWN_COLUMNS} more" if len(names) > _SHOWN_COLUMNS else ""
    warn(
        f"{cfg.source}: columns not read: {shown}{more}; to use one, name it in "
        "prompts.reference_field (reference answer), prompts.kind_field (math or "
        "instruction) or prompts.meta_field (an object of metadata, e.g. IFEval constraints)"
    )


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def _text_key(prompt: Prompt) -> bytes:
    # a digest, not the text: the loader keeps one per prompt
    return hashlib.blake2b(_normalised(prompt.text).encode(), digest_size=16).digest()


class _RepeatedTexts:
    """Prompts whose text (whitespace and case normalised) repeats an earlier prompt's under
    another id: counted and warned about, or an error when their references differ (one of
    them is wrong)."""

    def __init__(self) -> None:
        self.first: dict[bytes, tuple[str, Prompt]] = {}
        self.count = 0
        self.example = ""

    def add(self, where: str, prompt: Prompt) -> None:
        key = _text_key(prompt)
        if key not in self.first:
            self.first[key] = (where, prompt)
            return
        first_where, first = self.first[key]
        if _normalised(first.reference or "") != _normalised(prompt.reference or ""):
            raise DataError(
                f"{where}: prompt {prompt.id!r} has the text of {first.id!r} ({first_where}) "
                f"but another reference ({prompt.reference!r}, not {first.reference!r}); "
                "fix the wrong one or drop a row"
            )
        self.count += 1
        self.example = self.example or f"{prompt.id!r} ({where}) repeats {first.id!r}"

    def report(self, source: str | None) -> None:
        if self.count:
            warn(
                f"{source}: {self.count} prompts repeat the text of an earlier prompt under "
                f"another id (first: {self.example}); each is generated and trained on "
                "separately, drop the repeats unless that is intended"
            )

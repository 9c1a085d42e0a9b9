"""Prompts in: JSONL, JSON, Parquet, a `datasets` folder, a hub dataset, or a generated set
(a built-in name or the user's `module:function`).

Every row becomes a `Prompt` (id, chat messages, kind, reference, meta). A bad row stops
the load with one line naming the file, the row and the field, before any model loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from persyn.config import PromptsConfig
from persyn.plugins import PROMPT_SETS, resolve
from persyn.teachers.base import Prompt


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


def _rows_from_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {lineno}: invalid UTF-8 ({err.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {lineno}: malformed JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object per line")
            yield lineno, row


def _iter_rows(cfg: PromptsConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for error messages, row) for every source row."""
    source = str(cfg.source)
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"{path}: prompts file not found")
        for lineno, row in _rows_from_jsonl(path):
            yield f"{path}: line {lineno}", row
        return
    if path.suffix in {".json", ".parquet"} and not path.exists():
        raise DataError(f"{path}: prompts file not found")
    import datasets

    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not valid UTF-8 JSON ({err})") from None
        rows = data if isinstance(data, list) else data.get("data", [])
        for i, row in enumerate(rows):
            yield f"{path}: row {i}", row
        return
    if path.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
    elif path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        ds = loaded[cfg.split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:  # a hub dataset id
        ds = datasets.load_dataset(source, split=cfg.split)
    for i, row in enumerate(ds):
        yield f"{source}: row {i}", row


def _text(where: str, row: dict[str, Any], field: str) -> str:
    if field not in row:
        raise DataError(f"{where}: missing field {field!r} (set prompts.prompt_field)")
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r} is empty or not text")
    return value


def _messages(where: str, row: dict[str, Any], field: str) -> list[dict[str, str]]:
    value = row.get(field)
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


def load_prompts(cfg: PromptsConfig) -> list[Prompt]:
    if cfg.builtin:
        return builtin_prompts(cfg.builtin, cfg.num_prompts, cfg.seed)[: cfg.limit]
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    for index, (where, row) in enumerate(_iter_rows(cfg)):
        if cfg.limit and len(prompts) >= cfg.limit:
            break
        if cfg.messages_field:
            messages = _messages(where, row, cfg.messages_field)
        else:
            messages = [{"role": "user", "content": _text(where, row, cfg.prompt_field)}]
        chars = sum(len(m["content"]) for m in messages)
        if chars > cfg.max_prompt_chars:
            raise DataError(
                f"{where}: prompt has {chars} characters > prompts.max_prompt_chars "
                f"{cfg.max_prompt_chars}; shorten it or raise the limit"
            )
        if cfg.id_field and cfg.id_field in row:
            pid = str(row[cfg.id_field])
        elif cfg.id_field and cfg.id_field != "id":
            raise DataError(f"{where}: missing field {cfg.id_field!r} (prompts.id_field)")
        else:
            pid = f"row-{index:07d}"
        if pid in seen:
            raise DataError(f"{where}: duplicate id {pid!r} (first seen at {seen[pid]})")
        seen[pid] = where
        kind = row.get(cfg.kind_field, cfg.kind) if cfg.kind_field else cfg.kind
        if kind not in {"math", "instruction"}:
            raise DataError(f"{where}: field {cfg.kind_field!r} must be math or instruction")
        reference = None
        if cfg.reference_field:
            if row.get(cfg.reference_field) in (None, ""):
                raise DataError(f"{where}: missing field {cfg.reference_field!r} (reference)")
            reference = str(row[cfg.reference_field])
        meta = row.get(cfg.meta_field) if cfg.meta_field else None
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"{where}: field {cfg.meta_field!r} must be an object")
        prompts.append(Prompt(pid, messages, kind, reference, dict(meta or {})))
    if not prompts:
        raise DataError(f"{cfg.source}: no prompts found")
    return prompts

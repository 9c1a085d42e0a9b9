"""The run directory: atomic artifacts, append-only row logs, stage markers.

Layout (all paths relative to `run_dir`):

    config.yaml               the resolved config of the last run
    prompts.jsonl             normalised prompts (id, messages, kind, reference, meta)
    calibration.json          calibration prompt ids and the router's train/val split
    generations/<teacher>.jsonl   one row per (prompt, teacher config), appended as done
    scores/learnability.jsonl     one row per (prompt, teacher, student)
    scores/quality.jsonl          one row per (prompt, teacher, quality config)
    rewards.jsonl             per calibration prompt: raw, normalised, combined, oracle
    router/                   router checkpoint and metrics
    routes.jsonl              per routed prompt: teacher and router scores
    dataset.jsonl, dataset/   the personalised dataset (JSONL and `datasets` folder)
    summary.json              counts, generations used vs Generate-then-Select
    stages/<stage>.json       completion marker: input fingerprint and stats

Row logs are keyed: a rerun reads the rows already written and only computes the missing
ones, so a killed job loses at most the rows in flight. A torn last line (the process was
killed while writing it) is ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def iter_jsonl(path: Path, tolerate_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if tolerate_torn_tail and i == len(lines) - 1 and not line.endswith("\n"):
                return  # killed mid-write: the row was never complete
            raise ValueError(f"{path}: line {i + 1}: not valid JSON") from None


class RowLog:
    """Append-only JSONL of rows identified by `key(row)`; the last row for a key wins."""

    def __init__(self, path: Path, key_fields: tuple[str, ...]) -> None:
        self.path = path
        self.key_fields = key_fields
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if path.exists():
            self._repair_tail()
            for row in iter_jsonl(path):
                self.rows[self.key(row)] = row

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.key_fields)

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # Drop the torn last line so later appends start on a fresh line.
            keep = data[: data.rfind(b"\n") + 1]
            atomic_write_text(self.path, keep.decode("utf-8"))

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self.rows

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        return self.rows.get(key)

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            self.rows[self.key(row)] = row


class RunStore:
    """Paths and stage markers of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        p = (self.root / Path(*parts)).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact path {'/'.join(parts)!r} escapes the run directory")
        return p

    def marker(self, stage: str) -> dict[str, Any] | None:
        p = self.path("stages", f"{stage}.json")
        return json.loads(p.read_text()) if p.exists() else None

    def is_done(self, stage: str, fingerprint: str) -> bool:
        m = self.marker(stage)
        return m is not None and m.get("fingerprint") == fingerprint

    def mark_done(self, stage: str, fingerprint: str, stats: dict[str, Any]) -> None:
        atomic_write_json(
            self.path("stages", f"{stage}.json"),
            {"stage": stage, "fingerprint": fingerprint, "finished_at": time.time(), **stats},
        )

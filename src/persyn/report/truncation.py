"""The per-teacher truncation table of the report and the dataset card: answers cut at the
teacher's `max_new_tokens` (failed, or kept with `generation.keep_truncated`) and
calibration answers longer than the student's `max_length`."""

from __future__ import annotations

from typing import Any

from persyn.config import RunConfig

HEADERS = [
    "teacher",
    "cut at max_new_tokens",
    "share of its answers",
    "cut answers are",
    "longer than student.max_length (calibration)",
]


def truncation_table(cfg: RunConfig, summary: dict[str, Any]) -> list[list[str]] | None:
    """One row of `HEADERS` per teacher; None for a summary written before persyn counted
    truncation."""
    if "truncated_answers" not in summary:
        return None
    student = summary.get("student_truncated") or {}
    student_share = summary.get("student_truncation_share") or {}
    rows = []
    for t in cfg.teachers:
        too_long = student.get(t.name)
        rows.append(
            [
                t.name,
                str(summary["truncated_answers"].get(t.name, 0)),
                _percent(summary["truncation_share"].get(t.name)),
                "kept (keep_truncated)" if t.generation.keep_truncated else "failed, not exported",
                "-" if too_long is None else f"{too_long} ({_percent(student_share.get(t.name))})",
            ]
        )
    return rows


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"

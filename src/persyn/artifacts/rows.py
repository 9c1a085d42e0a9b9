"""The row types of a run directory's artifacts: the split, the reward table, dataset rows,
and what a generation or score row must look like to be trusted."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persyn.method import mark_failed
from persyn.store import ImpossibleRow
from persyn.teachers.base import Prompt

SCORE_SIGNALS = ("learnability", "quality")
# Every quality signal's value is on [0, 1] (`persyn.rewards.quality`); the slack absorbs
# the rounding of a weighted mean.
QUALITY_RANGE = (0.0, 1.0)
_SLACK = 1e-9


@dataclass
class Split:
    """Which prompts calibrate (every teacher answers) and which are routed."""

    calibration: list[str]
    router_train: list[str]
    router_val: list[str]
    routed: list[str]
    # hash of the calibration settings the draw used (none in runs before it was recorded)
    drawn_with: str | None = None
    # calibration prompts neither router training nor model selection sees
    router_test: list[str] = field(default_factory=list)


@dataclass
class RewardTable:
    """Per calibration prompt and teacher: raw learnability and quality, the combined
    reward (NaN where a teacher has no usable response) and the oracle's teacher; `failed`
    marks the teachers whose answer failed (an error; see `stages.score.failed_answers`),
    as opposed to a prompt not asked or a score that could not be computed."""

    ids: list[str]
    teachers: list[str]
    learnability: np.ndarray
    quality: np.ndarray
    reward: np.ndarray
    oracle: list[str | None]
    failed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))

    def __post_init__(self) -> None:
        if self.failed.shape != self.reward.shape:  # a table from before failures were kept
            self.failed = np.zeros(self.reward.shape, dtype=bool)

    @property
    def routing_reward(self) -> np.ndarray:
        """The combined reward with failed answers at -inf: what routers train on and are
        measured against (`persyn.method.mark_failed`)."""
        return mark_failed(self.reward, self.failed)

    def by_teacher(self, row: int) -> dict[str, dict[str, float | None]]:
        """Row `row` as {"learnability"|"quality"|"reward": {teacher: value or None}}."""
        return {
            key: dict(zip(self.teachers, _nan_list(matrix[row]), strict=True))
            for key, matrix in (
                ("learnability", self.learnability),
                ("quality", self.quality),
                ("reward", self.reward),
            )
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """One row per prompt, as `rewards.jsonl` holds them (NaN written as null)."""
        return [
            {
                "prompt_id": pid,
                "learnability": _nan_list(self.learnability[i]),
                "quality": _nan_list(self.quality[i]),
                "reward": _nan_list(self.reward[i]),
                "oracle": self.oracle[i],
                "failed": [t for t, f in zip(self.teachers, self.failed[i], strict=True) if f],
            }
            for i, pid in enumerate(self.ids)
        ]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], teachers: list[str]) -> RewardTable:
        return cls(
            [r["prompt_id"] for r in rows],
            teachers,
            _matrix(rows, "learnability", len(teachers)),
            _matrix(rows, "quality", len(teachers)),
            _matrix(rows, "reward", len(teachers)),
            [r["oracle"] for r in rows],
            np.array(
                [[t in r.get("failed", ()) for t in teachers] for r in rows], dtype=bool
            ).reshape(len(rows), len(teachers)),
        )

    def subset(self, ids: list[str]) -> RewardTable:
        row = {pid: i for i, pid in enumerate(self.ids)}
        rows = [row[pid] for pid in ids]
        return RewardTable(
            list(ids),
            self.teachers,
            self.learnability[rows],
            self.quality[rows],
            self.reward[rows],
            [self.oracle[i] for i in rows],
            self.failed[rows],
        )


@dataclass
class RowLogSpec:
    """A row-shaped artifact: where, what identifies a row, and which rows failed."""

    name: str
    path: Path
    key_fields: tuple[str, ...]
    failed: Callable[[dict[str, Any]], bool]


def dataset_row(
    prompt: Prompt,
    response: str,
    teacher: str,
    selected_by: str,
    router_scores: dict[str, float] | None = None,
    rewards: dict[str, dict[str, float | None]] | None = None,
) -> dict[str, Any]:
    """One row of a distillation dataset (the run's own and every baseline's)."""
    return {
        "id": prompt.id,
        "messages": [*prompt.messages, {"role": "assistant", "content": response}],
        "teacher": teacher,
        "selected_by": selected_by,
        "kind": prompt.kind,
        "reference": prompt.reference,
        "router_scores": router_scores,
        "rewards": rewards,
    }


def _nan_list(a: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in a]


def _matrix(rows: list[dict[str, Any]], key: str, width: int) -> np.ndarray:
    values = [[np.nan if v is None else v for v in r[key]] for r in rows]
    return np.array(values, dtype=float).reshape(len(rows), width)


def _json_or_none(x: Any) -> str | None:
    return None if x is None else json.dumps(x, sort_keys=True)


def hf_row(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset row for the `datasets` folder: the nested per-teacher dicts JSON-encoded
    (their keys differ per pool; Arrow wants one schema)."""
    return {
        **row,
        "router_scores": _json_or_none(row["router_scores"]),
        "rewards": _json_or_none(row["rewards"]),
    }


# -- what a row log's row must look like (`RowLog.check`): a row that fails is dropped and
# recomputed, never trusted ------------------------------------------------------------
def _check_finite(value: Any, where: str) -> None:
    """Every number in `value` is finite (rows store a non-finite score as null, so a NaN
    or Infinity can only come from an edit)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ImpossibleRow(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def _number(row: dict[str, Any], field: str, where: str = "") -> float | None:
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImpossibleRow(f"{where}{field}: {value!r} is not a number")
    return float(value)


def check_generation_row(row: dict[str, Any]) -> None:
    """A generation row: an answer without an error has text; token counts are counts.
    A failed row's text may be empty or null."""
    _check_finite(row, "")
    if row.get("error") is None:
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ImpossibleRow("text: missing or empty in a row without an error")
    for counted in ("prompt_tokens", "completion_tokens"):
        count = _number(row, counted)
        if count is not None and count < 0:
            raise ImpossibleRow(f"{counted}: {count:g} is negative")


def check_learnability_row(row: dict[str, Any]) -> None:
    """A learnability row: a mean log-likelihood is at most 0."""
    _check_finite(row, "")
    value = _number(row, "learnability")
    if value is not None and value > _SLACK:
        raise ImpossibleRow(f"learnability: {value:g} is above 0 (a mean log-likelihood)")


def check_quality_row(row: dict[str, Any]) -> None:
    """A quality row: the quality and each signal's value on `QUALITY_RANGE`."""
    _check_finite(row, "")
    signals = row.get("signals") or {}
    if not isinstance(signals, dict):
        raise ImpossibleRow(f"signals: {signals!r} is not a mapping")
    low, high = QUALITY_RANGE
    for name, value in [("quality", _number(row, "quality"))] + [
        (f"signals.{label}", _number(signals, label, "signals.")) for label in signals
    ]:
        if value is not None and not low - _SLACK <= value <= high + _SLACK:
            raise ImpossibleRow(f"{name}: {value:g} is outside [{low:g}, {high:g}]")


SCORE_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "learnability": check_learnability_row,
    "quality": check_quality_row,
}

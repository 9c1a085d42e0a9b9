"""The row types of a run directory's artifacts: the split, the reward table, dataset rows,
and what a generation or score row must look like to be trusted."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.config import TeacherConfig
from persyn.method import mark_failed
from persyn.rewards.learnability_signals import DEFAULT_SIGNAL, signal_bounds
from persyn.store import ImpossibleRow
from persyn.teachers.base import Prompt

if TYPE_CHECKING:
    from datasets import Features

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


@dataclass(frozen=True)
class Provenance:
    """Where an exported answer comes from, for a dataset user to audit (and to honour the
    licence of imported data, which differs from source to source)."""

    teacher_model: str  # the model id that answered (the data's model name if imported)
    generation_settings: str  # hash of the teacher's generation settings (its row key)
    router: str | None  # fingerprint of the router that chose the teacher (None: it did not)
    persyn_version: str
    imported: bool = False  # read from `calibration.source`, not generated
    source: str | None = None  # that data set (file, folder or hub id)
    source_row: str | None = None  # and where in it (file, row, field)
    fallback_from: tuple[str, ...] = ()  # teachers whose answer failed before this one
    # routed rows (None otherwise): how unlike the calibration prompts the prompt is, and
    # the router's top-1 win probability (`persyn.method.coverage`)
    novelty: float | None = None
    confidence: float | None = None

    @classmethod
    def of_answer(
        cls,
        teacher: TeacherConfig,
        row: dict[str, Any],
        router: str | None = None,
        fallback_from: tuple[str, ...] = (),
        route: dict[str, Any] | None = None,
    ) -> Provenance:
        """The provenance of generation row `row` of `teacher` (`route`: its routes row)."""
        route = route or {}
        imported = row.get("provenance") == "imported"
        return cls(
            teacher_model=(row.get("model") if imported else None) or teacher.model,
            generation_settings=row["fp"],
            router=router,
            persyn_version=persyn_version(),
            imported=imported,
            source=row.get("source"),
            source_row=row.get("source_row"),
            fallback_from=tuple(fallback_from),
            novelty=route.get("novelty"),
            confidence=route.get("confidence"),
        )

    def to_row(self) -> dict[str, Any]:
        return {**asdict(self), "fallback_from": list(self.fallback_from)}


@cache
def persyn_version() -> str:
    try:
        return version("persyn")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


def dataset_row(
    prompt: Prompt,
    response: str,
    teacher: str,
    selected_by: str,
    provenance: Provenance,
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
        "provenance": provenance.to_row(),
    }


def dataset_features(teachers: list[str]) -> Features:
    """The `datasets` schema of `dataset_row`s for a pool of `teachers`: the nested fields
    are Arrow structs (per-teacher values keyed by teacher name), so a user filters on
    `provenance.imported` or sorts by `router_scores.<teacher>` without parsing JSON."""
    from datasets import Features, Value

    text, number = Value("string"), Value("float64")
    per_teacher = dict.fromkeys(teachers, number)
    return Features(
        {
            "id": text,
            "messages": [{"role": text, "content": text}],
            "teacher": text,
            "selected_by": text,
            "kind": text,
            "reference": text,
            "router_scores": per_teacher,
            "rewards": {key: per_teacher for key in ("learnability", "quality", "reward")},
            "provenance": {
                "teacher_model": text,
                "generation_settings": text,
                "router": text,
                "persyn_version": text,
                "imported": Value("bool"),
                "source": text,
                "source_row": text,
                "fallback_from": [text],
                "novelty": number,
                "confidence": number,
            },
        }
    )


def _nan_list(a: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in a]


def _matrix(rows: list[dict[str, Any]], key: str, width: int) -> np.ndarray:
    values = [[np.nan if v is None else v for v in r[key]] for r in rows]
    return np.array(values, dtype=float).reshape(len(rows), width)


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
    """A learnability row: its value within the bounds its signal declares (a mean
    log-likelihood is at most 0); rows from before signals were recorded are the default's."""
    _check_finite(row, "")
    value = _number(row, "learnability")
    name = row.get("signal", DEFAULT_SIGNAL)
    low, high = signal_bounds(name)
    if value is not None and not low - _SLACK <= value <= high + _SLACK:
        raise ImpossibleRow(f"learnability: {value:g} is outside [{low:g}, {high:g}] ({name})")


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

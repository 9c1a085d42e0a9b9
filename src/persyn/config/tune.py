"""The `tune` section: `persyn tune` and `rewards.alpha: auto` (which reward setting
teaches this student best, measured on pilot students)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from persyn.config.base import Section
from persyn.config.sections import PromptsConfig

PAPER_ALPHA = 0.4  # the paper's alpha: kept unless a setting beats it beyond the interval
PAPER_SIGNAL = "mean_logprob"  # the paper's learnability signal


class TuneConfig(Section):
    """A grid of reward settings, one pilot student each, trained on the calibration
    answers (every teacher answered every calibration prompt: no new generation)."""

    alphas: list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6],
        min_length=1,
        description="Alphas to try; the paper's 0.4 is always tried (the reference).",
    )
    learnability_signals: list[str] | None = Field(
        None,
        min_length=1,
        description="Learnability signals to try (keys of persyn.learnability, e.g. "
        "`mean_logprob`, `rank_surprisal_ratio`); each is crossed with every alpha. "
        "Default: the run's `rewards.learnability` alone. A signal other than the run's "
        "scores the calibration answers once more with the student (no generation).",
    )
    max_rows: int | None = Field(
        None,
        gt=0,
        description="Calibration prompts a pilot student trains on (a seeded draw, the same "
        "for every setting); default: all of them.",
    )
    pilot_answers: Literal["routed", "oracle"] = Field(
        "routed",
        description="Whose calibration answer a pilot dataset takes for each prompt. "
        "`routed`: the teacher the run's router (`router`, trained under the setting's "
        "reward on the calibration prompts of the other `pilot_folds` folds, never on the "
        "prompt itself) and routing policy choose: the data Route-then-Generate makes for "
        "prompts like these. `oracle`: the best-rewarded answer (Generate-then-Select), "
        "which the router only approximates: on the replication's arithmetic task alpha "
        "0's oracle picks were alpha 0.4's, while its router sent every prompt to one "
        "teacher.",
    )
    pilot_folds: int = Field(
        5,
        ge=2,
        description="`pilot_answers: routed`: folds of the calibration prompts; each fold "
        "is routed by a router trained on the others (one router fit per fold and setting).",
    )
    max_steps: int = Field(
        30,
        gt=0,
        description="Training steps per pilot student (the run's `student_training` recipe "
        "otherwise: method, learning rate, batch size).",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="Training seeds: one pilot student per setting and seed.",
    )
    validation: PromptsConfig | None = Field(
        None,
        description="Prompts the pilot students are scored on, same format as `prompts`; "
        "required by `persyn tune` and `rewards.alpha: auto`. Checked disjoint (normalised "
        "text) from every prompt of the run and from `evaluation.prompts`.",
    )
    bootstrap_resamples: int = Field(
        2_000, gt=0, description="Paired bootstrap resamples of the validation prompts."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the intervals.")
    seed: int = Field(0, description="Seed of the row draw and of the bootstrap.")

    @field_validator("alphas")
    @classmethod
    def _alphas_in_range(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if not 0 <= a <= 1]
        if bad:
            raise ValueError(f"{bad}: every alpha must be in [0, 1]")
        return list(dict.fromkeys(v))

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"{v} repeats a seed; each seed trains its own student")
        return v

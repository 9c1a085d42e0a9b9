"""The `rewards` section: the quality signals, the learnability signal and how the two mix."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from persyn.config.base import Section


class QualitySignal(Section):
    kind: str = Field(
        description="Quality signal: a key of the registry "
        "persyn.rewards.quality.QUALITY_SIGNALS (`math`, `ifeval`, `reward_model`, `judge`, "
        "`imported`, or a `persyn.quality` plug-in), checked by `persyn validate`."
    )
    name: str | None = Field(
        None, description="Label in the scores file (default: `kind`); unique per config."
    )
    weight: float = Field(1.0, gt=0, description="Weight when several signals apply.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Signal settings (see the signal's docstring)."
    )

    @property
    def label(self) -> str:
        return self.name or self.kind


class LearnabilitySignalConfig(Section):
    name: str = Field(
        "mean_logprob",
        description="Learnability signal: a key of the registry "
        "persyn.rewards.learnability_signals.LEARNABILITY_SIGNALS (`mean_logprob`, the "
        "paper's; `rank_surprisal_ratio`; or a `persyn.learnability` plug-in), checked by "
        "`persyn validate`. Higher is more learnable; a change rescores learnability only.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Signal settings (see the signal's docstring)."
    )

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        """`learnability: rank_surprisal_ratio` is short for `{name: rank_surprisal_ratio}`."""
        return {"name": data} if isinstance(data, str) else data


class RewardsConfig(Section):
    alpha: float | Literal["auto"] = Field(
        0.4,
        description="r = (1-alpha)*quality + alpha*learnability, in [0, 1]; `auto`: the "
        "setting of the `tune` grid whose pilot student scores best (the `tune` stage), the "
        "paper's 0.4 unless another beats it beyond the interval.",
    )
    normalization: Literal["minmax", "zscore", "rank"] = Field(
        "minmax", description="Normalisation within each prompt across teachers."
    )
    quality: list[QualitySignal] = Field(
        default_factory=lambda: [QualitySignal(kind="math")],
        description="Quality signals; each scores the prompts it applies to. A prompt "
        "kind none of them covers is an error at `persyn validate` and `persyn run` (its "
        "teachers would be ranked on learnability alone) unless `learnability_only` is set.",
    )
    learnability: LearnabilitySignalConfig = Field(
        default_factory=LearnabilitySignalConfig,
        description="How the student's forward pass over an answer becomes its learnability "
        "(default: the paper's mean token log-likelihood).",
    )
    learnability_only: bool = Field(
        False,
        description="Allow prompt kinds no quality signal covers: their teachers are ranked "
        "on the student's learnability alone (the coverage is still recorded and reported).",
    )
    tie_margin_learnability: float = Field(
        0.01,
        ge=0,
        description="Learnability scores of one prompt within this much count as equal "
        "before normalising, so noise is not a full preference. In mean_logprob units, nats "
        "per token; each signal scales it to its own units (its `tie_margin_scale`).",
    )
    tie_margin_quality: float = Field(
        1e-9,
        ge=0,
        description="Quality scores of one prompt within this count as equal before normalising.",
    )

    @field_validator("alpha")
    @classmethod
    def _alpha_in_range(cls, v: float | str) -> float | str:
        if v != "auto" and not 0 <= float(v) <= 1:
            raise ValueError(f"{v}: alpha must be in [0, 1] or `auto`")
        return v

    @property
    def tuned(self) -> bool:
        """Whether the `tune` stage chooses alpha (and the learnability signal)."""
        return self.alpha == "auto"

    @property
    def mix_alpha(self) -> float:
        """The alpha that mixes rewards; `auto` must be resolved first (`persyn.tune`)."""
        if isinstance(self.alpha, str):
            raise ValueError("rewards.alpha is `auto`: resolve it with the tune stage's choice")
        return self.alpha

    @field_validator("quality")
    @classmethod
    def _unique_labels(cls, v: list[QualitySignal]) -> list[QualitySignal]:
        labels = [s.label for s in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"quality signals {labels} repeat a label; give each a `name`")
        return v

"""The quality-signal interface: `score(samples) -> one SignalScore or None per sample`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from persyn.config import QualitySignal
from persyn.teachers.base import Prompt

Sample = tuple[Prompt, str]


@dataclass
class SignalScore:
    value: float | None  # in [0, 1]; None: the signal applies but could not score
    error: str | None = None  # why there is no value
    raw: float | None = None  # the signal's own scale, where it differs (reward model)
    # what a judge's request used (the spend ledger prices them); 0 for signals with none
    prompt_tokens: int = 0
    completion_tokens: int = 0


class QualityScorer(ABC):
    name: ClassVar[str]  # its registry key (`rewards.quality[].kind`)
    #: the prompt kinds it can score with suitable options (None: any kind), and in words
    #: which prompts it scores: what the coverage check suggests for an uncovered kind
    kinds: ClassVar[tuple[str, ...] | None] = None
    covers: ClassVar[str] = "prompts of any kind"
    #: it scores answers with the scores `calibration.source` gave them, so it needs a source
    #: with scores in it (`score_field`, or `scores` per teacher)
    needs_source_scores: ClassVar[bool] = False

    def __init__(self, cfg: QualitySignal) -> None:
        self.cfg = cfg
        self.where = f"rewards.quality[{cfg.label}].options"  # for error messages

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise `ConfigError` for bad options, loading nothing (`persyn validate`)."""

    # A stage scores its responses in chunks (each saved before the next): a signal that
    # holds a model loads it once, on the first chunk that needs it, keeps it for the
    # following chunks and lets it go in `unload` (see `persyn.rewards.quality.scorers`).
    def load(self) -> None:  # noqa: B027 - optional hook
        """Load what scoring needs (a model, a judge); called again, does nothing."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release what `load` holds."""

    def applies(self, prompt: Prompt) -> bool:
        """Whether it scores the answers to `prompt` (a value, or the reason it has none):
        `score` gives None for the others, and the coverage check (`persyn validate`,
        `prepare`) counts the prompts no configured signal applies to."""
        return self.kinds is None or prompt.kind in self.kinds

    @abstractmethod
    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        """One `SignalScore` (or None: not applicable) per (prompt, response)."""

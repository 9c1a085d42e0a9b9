"""Learnability signals: how the student's forward pass over an answer becomes one number,
higher for an answer the student learns more from (`rewards.learnability`).

The scorer runs the student once over prompt + answer (`persyn.rewards.learnability`) and
hands a signal, per answer, what it read of each answer token (`AnswerTokens`): the
token's log-probability and, when the signal asks for it (`needs_ranks`), the token's rank
among the student's predictions. Both engines give both: transformers from its logits,
vLLM from `prompt_logprobs`. The signal reduces them to its value; normalisation within
the prompt and the mix with quality come after, in `persyn.method`, whatever the signal.

Built in:

- `mean_logprob` (the default, the paper's): the mean token log-likelihood.
- `rank_surprisal_ratio`: minus the Rank-Surprisal Ratio of Yang et al., "Which Reasoning
  Trajectories Teach Students to Reason Better? A Simple Metric of Informative Alignment"
  (arXiv 2601.14249, 2026), which reports it predicts the student's gain from a teacher's
  data better than the student's likelihood does.

A signal declares the values it can take (`bounds`): a stored learnability row outside
them cannot be one of its scores and is recomputed (`persyn.artifacts.rows`). It also says
how `rewards.tie_margin_learnability`, configured in `mean_logprob` units, maps onto its
own (`tie_margin_scale`), so one margin means as much noise whichever signal is mixed
(`learnability_tie_margin`). Plug-ins join through the `persyn.learnability` entry points.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from persyn.config import ConfigError, LearnabilitySignalConfig, RewardsConfig
from persyn.registry import Registry

DEFAULT_SIGNAL = LearnabilitySignalConfig().name


@dataclass(frozen=True)
class AnswerTokens:
    """What the student's forward pass says of each token of one answer, in order."""

    logprobs: np.ndarray  # the student's log-probability of the token (float)
    # 1 + how many tokens of the vocabulary the student rates above it (1: its first
    # choice); None unless the signal `needs_ranks`
    ranks: np.ndarray | None = None


class LearnabilitySignal(ABC):
    name: ClassVar[str]  # its registry key (`rewards.learnability.name`)
    #: it reads `AnswerTokens.ranks` (one more comparison over the vocabulary per token)
    needs_ranks: ClassVar[bool] = False
    #: the values it can take, (low, high)
    bounds: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    #: its typical within-prompt spread over that of `mean_logprob`: the tie margin, given
    #: in nats per token, times this is a margin in the signal's units
    tie_margin_scale: ClassVar[float] = 1.0

    def __init__(self, cfg: LearnabilitySignalConfig) -> None:
        self.cfg = cfg

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise `ConfigError` for bad options, loading nothing (`persyn validate`)."""

    @abstractmethod
    def value(self, tokens: AnswerTokens) -> float:
        """The answer's learnability (at least one token), higher for more learnable."""


class MeanLogprob(LearnabilitySignal):
    """The paper's learnability: (1/|y|) sum_t log p_student(y_t | x, y_<t)."""

    name = "mean_logprob"
    bounds = (-math.inf, 0.0)

    def value(self, tokens: AnswerTokens) -> float:
        return float(np.mean(tokens.logprobs, dtype=np.float64))


class RankSurprisalRatio(LearnabilitySignal):
    """Minus the Rank-Surprisal Ratio (RSR) of Yang et al. 2026, arXiv 2601.14249:

        RSR = sum_t min(rank_t, r) / sum_t -log p_student(y_t | x, y_<t)

    with rank_t the answer token's rank among the student's predictions (1: its top
    choice), clipped at r (option `rank_clip`, default 100 as in the paper's code). The
    paper finds that answers which teach a student most are surprising to it (a high
    total surprisal: something to learn) while made of tokens it already ranks high (a low
    rank: close to what it would say), and that a low RSR predicts the student's gain from
    a teacher's data better than its likelihood; persyn uses -RSR so that higher is more
    learnable like every signal. An answer the student predicts perfectly (no surprisal)
    gets a very low value: nothing to learn from it.
    """

    name = "rank_surprisal_ratio"
    needs_ranks = True
    bounds = (-math.inf, 0.0)
    # measured by bench/bench_tie_margin.py: the median gap between two teachers' -RSR on
    # one prompt over that of their mean_logprob, on the replication's answers (2.04 on
    # arith, 1.14 on instruct; geometric mean 1.52)
    tie_margin_scale = 1.5
    SURPRISAL_FLOOR = 1e-12  # as the paper's code: no division by zero

    def check(self) -> None:
        clip = self.cfg.options.get("rank_clip", 100)
        if isinstance(clip, bool) or not isinstance(clip, int) or clip < 1:
            raise ConfigError(
                f"rewards.learnability.options.rank_clip: {clip!r} is not a whole number >= 1"
            )
        unknown = sorted(set(self.cfg.options) - {"rank_clip"})
        if unknown:
            raise ConfigError(f"rewards.learnability.options: unknown {unknown}; known: rank_clip")

    def value(self, tokens: AnswerTokens) -> float:
        assert tokens.ranks is not None  # needs_ranks: the scorer always gives them
        clip = int(self.cfg.options.get("rank_clip", 100))
        ranks = np.minimum(tokens.ranks, clip).sum(dtype=np.float64)
        surprisal = -np.sum(tokens.logprobs, dtype=np.float64)
        return -float(ranks / max(surprisal, self.SURPRISAL_FLOOR))


LEARNABILITY_SIGNALS: Registry[LearnabilitySignal] = Registry(
    "persyn.learnability",
    "learnability signal",
    LearnabilitySignal,
    {cls.name: cls for cls in (MeanLogprob, RankSurprisalRatio)},
)


def learnability_signal(cfg: LearnabilitySignalConfig) -> LearnabilitySignal:
    """The configured signal, its options checked."""
    LEARNABILITY_SIGNALS.check(cfg.name, "rewards.learnability.name")
    signal = LEARNABILITY_SIGNALS.load(cfg.name)(cfg)
    signal.check()
    return signal


def signal_bounds(name: str) -> tuple[float, float]:
    """The values signal `name` can take; any value for a signal not installed here."""
    try:
        return LEARNABILITY_SIGNALS.load(name).bounds
    except ConfigError:
        return (-math.inf, math.inf)


def learnability_tie_margin(rewards: RewardsConfig) -> float:
    """`rewards.tie_margin_learnability` in the units of the signal `rewards` mixes (its
    `tie_margin_scale`; the default signal's margin is the configured one)."""
    scale = LEARNABILITY_SIGNALS.load(rewards.learnability.name).tie_margin_scale
    return rewards.tie_margin_learnability * scale

"""What every routing policy shares: the `Policy` interface, the expected cost of sending
a prompt to a teacher, and the router's expected reward (the scale budgets trade off)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from persyn.config import ConfigError, RoutingPolicyConfig, RunConfig


def cost_per_prompt(
    cfg: RunConfig, mean_response_tokens: dict[str, float], prompt_tokens: dict[str, float]
) -> np.ndarray:
    """Expected money per routed prompt for each teacher, in pool order: expected prompt
    tokens (`prompt_tokens`, every teacher) at its input price plus expected completion
    tokens (configured, else measured) at its output price."""
    costs = []
    for t in cfg.teachers:
        tokens = cfg.routing.expected_tokens.get(t.name, mean_response_tokens.get(t.name))
        if tokens is None:
            if t.cost_per_1k_output_tokens == 0:
                tokens = 0.0  # free output: its length does not matter
            else:
                raise ConfigError(
                    f"routing.expected_tokens: teacher {t.name!r} has a price but no "
                    "calibration responses to measure its length; set its expected tokens"
                )
        money = t.cost_per_1k_input_tokens * prompt_tokens[t.name]
        costs.append((money + t.cost_per_1k_output_tokens * tokens) / 1000)
    return np.array(costs, dtype=float)


def expected_reward(scores: np.ndarray) -> np.ndarray:
    """[prompts, teachers]: each teacher's mean win probability against the other teachers
    of its prompt under the Bradley-Terry model the router was trained as,
    mean over k != j of sigmoid(s_j - s_k).

    Why this and not the scores: a router's scores are logits, fixed only up to a constant
    per prompt and on no common scale across prompts (a gap of 2 on one prompt is not worth
    twice a gap of 1 on another), so summing them over prompts, as a budget does, trades
    prompts on a meaningless scale. Win probabilities are what the router was fitted to
    predict (the Bradley-Terry loss is the cross-entropy of exactly these sigmoids), lie in
    [0, 1] on every prompt and do not move with a per-prompt constant. Of the two natural
    choices, the mean pairwise win probability (the expected share of the other teachers
    whose answer this one beats) rather than softmax (the probability of being the best):
    softmax spreads mass thinner as the pool grows and rewards only the top, while the
    pairwise mean keeps its meaning for any pool size and values a near-best teacher
    nearly as much as the best, which is what a budget trades. It is increasing in s_j,
    so argmax over it is argmax over the scores.
    """
    from scipy.special import expit

    n_teachers = scores.shape[1]
    if n_teachers < 2:
        return np.ones_like(scores, dtype=float)
    # One teacher at a time: [prompts, teachers, teachers] at once is 200 MB at 57K x 20.
    wins = np.stack([expit(scores[:, [j]] - scores).sum(axis=1) for j in range(n_teachers)], axis=1)
    return (wins - 0.5) / (n_teachers - 1)  # less sigmoid(0) = 0.5: itself is no rival


class Policy(ABC):
    """Turns scores into choices. Subclasses implement `choose`."""

    name: ClassVar[str]  # its registry key (`routing.kind`)

    def __init__(self, cfg: RoutingPolicyConfig, teachers: list[str], cost: np.ndarray) -> None:
        self.cfg = cfg
        self.teachers = teachers
        self.cost = cost

    @abstractmethod
    def choose(self, scores: np.ndarray) -> np.ndarray:
        """Teacher index per prompt, from scores [prompts, teachers]."""

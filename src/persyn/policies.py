"""Routing policies: how router scores [prompts, teachers] become one teacher per prompt.

    argmax   the router's best teacher for every prompt (the paper)
    sample   a teacher drawn from softmax(scores / temperature): more diverse data
    budget   the assignment with the highest total score whose expected cost fits a budget
             and whose per-teacher shares fit quotas, solved exactly as a 0/1 program
             (scipy.optimize.milp, HiGHS)

The expected cost of sending a prompt to a teacher is its price per 1K tokens times its
expected response length (the mean over its calibration responses, or a configured value).
`policy_report` gives the money saved and the score given up against argmax.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from persyn.config import ConfigError, RoutingPolicyConfig, RunConfig


def cost_per_prompt(cfg: RunConfig, mean_response_tokens: dict[str, float]) -> np.ndarray:
    """Expected money per routed prompt for each teacher, in pool order."""
    costs = []
    for t in cfg.teachers:
        tokens = cfg.routing.expected_tokens.get(t.name, mean_response_tokens.get(t.name))
        if tokens is None:
            if t.cost_per_1k_tokens == 0:
                tokens = 0.0  # free teacher: its length does not matter
            else:
                raise ConfigError(
                    f"routing.expected_tokens: teacher {t.name!r} has a price but no "
                    "calibration responses to measure its length; set its expected tokens"
                )
        costs.append(t.cost_per_1k_tokens * tokens / 1000)
    return np.array(costs, dtype=float)


class Policy(ABC):
    """Turns scores into choices. Subclasses implement `choose`."""

    name: ClassVar[str]

    def __init__(self, cfg: RoutingPolicyConfig, teachers: list[str], cost: np.ndarray) -> None:
        self.cfg = cfg
        self.teachers = teachers
        self.cost = cost

    @abstractmethod
    def choose(self, scores: np.ndarray) -> np.ndarray:
        """Teacher index per prompt, from scores [prompts, teachers]."""


class ArgmaxPolicy(Policy):
    name = "argmax"

    def choose(self, scores: np.ndarray) -> np.ndarray:
        return np.argmax(scores, axis=1)


class SamplePolicy(Policy):
    name = "sample"

    def choose(self, scores: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        probs = softmax(scores / self.cfg.temperature, axis=1)
        draws = np.random.default_rng(self.cfg.seed).random((len(scores), 1))
        # Inverse-CDF sampling, one uniform draw per prompt; the clip guards float rounding.
        return np.minimum((probs.cumsum(axis=1) < draws).sum(axis=1), scores.shape[1] - 1)


class BudgetPolicy(Policy):
    name = "budget"

    def choose(self, scores: np.ndarray) -> np.ndarray:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_array, eye_array, kron

        n_prompts, n_teachers = scores.shape
        if n_prompts == 0:
            return np.zeros(0, dtype=np.int64)
        self._check_feasible(n_prompts)
        # Variables x[p, t] flattened row-major; each prompt gets exactly one teacher.
        constraints = [
            LinearConstraint(
                kron(eye_array(n_prompts, format="csr"), csr_array(np.ones((1, n_teachers)))), 1, 1
            )
        ]
        if self.cfg.budget is not None:
            constraints.append(
                LinearConstraint(np.tile(self.cost, n_prompts)[None, :], -np.inf, self.cfg.budget)
            )
        for name, share in self.cfg.max_share.items():
            column = np.zeros(n_teachers)
            column[self.teachers.index(name)] = 1
            constraints.append(
                LinearConstraint(
                    np.tile(column, n_prompts)[None, :], 0, np.floor(share * n_prompts)
                )
            )
        # Scores relative to each prompt's best: the same optimum, better conditioned.
        gain = (scores - scores.max(axis=1, keepdims=True)).ravel()
        result = milp(
            -gain,
            constraints=constraints,
            integrality=np.ones(gain.size),
            bounds=Bounds(0, 1),
        )
        if result.x is None:
            raise ConfigError(
                f"routing: no assignment of {n_prompts} prompts meets budget "
                f"{self.cfg.budget} and max_share {self.cfg.max_share} ({result.message}); "
                "raise routing.budget or the quotas"
            )
        return result.x.reshape(n_prompts, n_teachers).argmax(axis=1)

    def _check_feasible(self, n_prompts: int) -> None:
        cheapest = float(self.cost.min()) * n_prompts
        if self.cfg.budget is not None and cheapest > self.cfg.budget + 1e-9:
            raise ConfigError(
                f"routing.budget: {self.cfg.budget} is below the cheapest possible assignment "
                f"of {n_prompts} prompts ({cheapest:.4g}); raise it"
            )
        capped = {self.teachers.index(n): s for n, s in self.cfg.max_share.items()}
        room = sum(np.floor(capped.get(i, 1.0) * n_prompts) for i in range(len(self.teachers)))
        if room < n_prompts:
            raise ConfigError(
                f"routing.max_share: the quotas {self.cfg.max_share} leave room for "
                f"{int(room)} of {n_prompts} prompts; raise them"
            )


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (ArgmaxPolicy, SamplePolicy, BudgetPolicy)}


def make_policy(cfg: RoutingPolicyConfig, teachers: list[str], cost: np.ndarray) -> Policy:
    return POLICIES[cfg.kind](cfg, teachers, cost)


def policy_report(
    scores: np.ndarray,
    choice: np.ndarray,
    cost: np.ndarray,
    teachers: list[str],
    reward: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cost and score (and true reward, when known) of `choice` against argmax."""
    rows = np.arange(len(scores))
    best = scores.argmax(axis=1)
    report: dict[str, Any] = {
        "prompts": len(scores),
        "cost": float(cost[choice].sum()),
        "argmax_cost": float(cost[best].sum()),
        "money_saved": float(cost[best].sum() - cost[choice].sum()),
        "score_given_up": float((scores[rows, best] - scores[rows, choice]).mean())
        if len(scores)
        else 0.0,
        "changed_from_argmax": int((choice != best).sum()),
        "shares": {
            t: float(np.mean(choice == i)) if len(choice) else 0.0 for i, t in enumerate(teachers)
        },
    }
    if reward is not None:
        filled = np.where(np.isnan(reward), 0.0, reward)
        report["reward"] = float(filled[rows, choice].mean())
        report["argmax_reward"] = float(filled[rows, best].mean())
        report["reward_given_up"] = report["argmax_reward"] - report["reward"]
    return report

"""Routing policies: how router scores [prompts, teachers] become one teacher per prompt.

    argmax   the router's best teacher for every prompt (the paper)
    sample   a teacher drawn from softmax(scores / temperature): more diverse data
    budget   the assignment with the highest total expected reward (`expected_reward`:
             each teacher's mean win probability over the others, from the router's
             scores) whose expected cost fits a budget and whose per-teacher shares fit
             quotas: exactly, as a 0/1 program (scipy's HiGHS), up to EXACT_MAX_VARIABLES
             prompt x teacher pairs; above, a near-optimal one that still fits (a budget
             alone by Lagrangian bisection on the price of money, quotas by the LP
             relaxation, rounded)

The expected cost of sending a prompt to a teacher counts prompt and completion tokens,
each at the teacher's own price per 1K: its expected prompt tokens (see
`persyn.stages.route.expected_prompt_tokens`) times `cost_per_1k_input_tokens`, plus its
expected response length (the mean over its calibration responses, or a configured value)
times `cost_per_1k_output_tokens`. `policy_report` gives the money saved and the expected
reward given up against argmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from persyn.config import RoutingPolicyConfig
from persyn.method import choose_teachers
from persyn.policies.base import Policy, cost_per_prompt, expected_reward
from persyn.policies.budget import EXACT_MAX_VARIABLES, BudgetPolicy
from persyn.registry import Registry

__all__ = [
    "EXACT_MAX_VARIABLES",
    "POLICIES",
    "ArgmaxPolicy",
    "BudgetPolicy",
    "Policy",
    "SamplePolicy",
    "cost_per_prompt",
    "expected_reward",
    "make_policy",
    "policy_report",
]


class ArgmaxPolicy(Policy):
    name = "argmax"

    def choose(self, scores: np.ndarray) -> np.ndarray:
        return choose_teachers(scores)


class SamplePolicy(Policy):
    name = "sample"

    def choose(self, scores: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        probs = softmax(scores / self.cfg.temperature, axis=1)
        draws = np.random.default_rng(self.cfg.seed).random((len(scores), 1))
        # Inverse-CDF sampling, one uniform draw per prompt; the clip guards float rounding.
        return np.minimum((probs.cumsum(axis=1) < draws).sum(axis=1), scores.shape[1] - 1)


# Plug-ins join through the `persyn.policies` entry points.
POLICIES: Registry[Policy] = Registry(
    "persyn.policies",
    "routing policy",
    Policy,
    {p.name: p for p in (ArgmaxPolicy, SamplePolicy, BudgetPolicy)},
)


def make_policy(cfg: RoutingPolicyConfig, teachers: list[str], cost: np.ndarray) -> Policy:
    return POLICIES.load(cfg.kind)(cfg, teachers, cost)


def policy_report(
    scores: np.ndarray,
    choice: np.ndarray,
    cost: np.ndarray,
    teachers: list[str],
    reward: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cost and expected reward (and true reward, when known) of `choice` against argmax.
    The expected reward is the router's (`expected_reward`, the quantity the budget policy
    maximises), not its raw scores, which have no common scale across prompts."""
    rows = np.arange(len(scores))
    best = choose_teachers(scores)
    expected = expected_reward(scores)
    report: dict[str, Any] = {
        "prompts": len(scores),
        "cost": float(cost[choice].sum()),
        "argmax_cost": float(cost[best].sum()),
        "money_saved": float(cost[best].sum() - cost[choice].sum()),
        "expected_reward": float(expected[rows, choice].mean()) if len(scores) else 0.0,
        "expected_reward_given_up": float((expected[rows, best] - expected[rows, choice]).mean())
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

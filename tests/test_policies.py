"""Routing policies: argmax, temperature sampling, and the budget/quota assignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from persyn.config import ConfigError, RoutingPolicyConfig, parse_config
from persyn.policies import POLICIES, cost_per_prompt, make_policy, policy_report

TEACHERS = ["big", "mid", "small"]
COST = np.array([3.0, 1.0, 0.2])


def choose(scores: np.ndarray, **cfg: object) -> np.ndarray:
    return make_policy(RoutingPolicyConfig(**cfg), TEACHERS, COST).choose(scores)


def test_registry_names_every_policy_kind() -> None:
    assert set(POLICIES) == {"argmax", "sample", "budget"}


def test_argmax_is_the_row_maximum() -> None:
    scores = np.random.default_rng(0).normal(size=(50, 3))
    assert (choose(scores) == scores.argmax(axis=1)).all()


def test_sampling_is_seeded_and_its_temperature_controls_diversity() -> None:
    scores = np.tile([2.0, 1.0, 0.0], (4000, 1))
    cold = choose(scores, kind="sample", temperature=0.01)
    assert (cold == 0).all()
    hot = choose(scores, kind="sample", temperature=100.0)
    shares = np.bincount(hot, minlength=3) / len(hot)
    assert np.allclose(shares, 1 / 3, atol=0.03)
    warm = choose(scores, kind="sample", temperature=1.0, seed=3)
    expected = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    assert np.allclose(np.bincount(warm, minlength=3) / len(warm), expected, atol=0.03)
    assert (warm == choose(scores, kind="sample", temperature=1.0, seed=3)).all()
    assert (warm != choose(scores, kind="sample", temperature=1.0, seed=4)).any()


def best_by_brute_force(scores: np.ndarray, budget: float, caps: dict[int, int]) -> float:
    best = -np.inf
    for choice in itertools.product(range(scores.shape[1]), repeat=len(scores)):
        picked = np.array(choice)
        if COST[picked].sum() > budget + 1e-9:
            continue
        if any((picked == t).sum() > cap for t, cap in caps.items()):
            continue
        best = max(best, scores[np.arange(len(scores)), picked].sum())
    return best


@pytest.mark.parametrize("seed", range(5))
def test_budget_assignment_is_optimal_and_within_budget_and_quota(seed: int) -> None:
    scores = np.random.default_rng(seed).normal(size=(5, 3))
    budget = 4.0
    choice = choose(scores, kind="budget", budget=budget, max_share={"mid": 0.4})
    assert COST[choice].sum() <= budget + 1e-9
    assert (choice == 1).sum() <= 2
    total = scores[np.arange(5), choice].sum()
    assert total == pytest.approx(best_by_brute_force(scores, budget, {1: 2}))


def test_a_budget_that_does_not_bind_gives_argmax() -> None:
    scores = np.random.default_rng(1).normal(size=(30, 3))
    assert (choose(scores, kind="budget", budget=1e6) == scores.argmax(axis=1)).all()


def test_report_shows_money_saved_and_reward_given_up() -> None:
    scores = np.array([[3.0, 2.0, 1.0]] * 10)
    reward = np.array([[1.0, 0.8, 0.5]] * 10)
    choice = choose(scores, kind="budget", budget=10 * 1.0)
    report = policy_report(scores, choice, COST, TEACHERS, reward)
    assert report["argmax_cost"] == pytest.approx(30.0)
    assert report["cost"] <= 10.0 + 1e-9
    assert report["money_saved"] == pytest.approx(report["argmax_cost"] - report["cost"])
    assert report["reward_given_up"] > 0
    assert report["changed_from_argmax"] > 0
    assert sum(report["shares"].values()) == pytest.approx(1.0)


def test_impossible_budget_or_quotas_fail_with_the_key_and_the_fix() -> None:
    scores = np.zeros((10, 3))
    with pytest.raises(ConfigError, match=r"routing.budget: 1.0 is below the cheapest.*\(2\)"):
        choose(scores, kind="budget", budget=1.0)
    with pytest.raises(ConfigError, match=r"routing\.max_share.*room for 6 of 10"):
        choose(scores, kind="budget", max_share={"big": 0.2, "mid": 0.2, "small": 0.2})


def run_config(**routing: object) -> dict[str, object]:
    scripted = {"backend": "scripted", "model": "solver-quick"}
    teachers = [
        {"name": "big", **scripted, "cost_per_1k_tokens": 3.0},
        {"name": "small", **scripted, "cost_per_1k_tokens": 0.5},
    ]
    return {
        "student": {"model": "x"},
        "teachers": teachers,
        "prompts": {"builtin": "arithmetic"},
        "routing": routing,
    }


def test_costs_use_measured_lengths_unless_configured() -> None:
    cfg = parse_config(run_config(kind="budget", expected_tokens={"small": 100}))
    cost = cost_per_prompt(cfg, {"big": 400.0, "small": 20.0})
    assert cost == pytest.approx([3.0 * 0.4, 0.5 * 0.1])
    with pytest.raises(ConfigError, match="teacher 'big' has a price but no calibration"):
        cost_per_prompt(cfg, {})


def test_config_rejects_quotas_for_unknown_teachers_and_bad_shares() -> None:
    with pytest.raises(ConfigError, match=r"routing\.max_share: unknown teacher 'huge'"):
        parse_config(run_config(max_share={"huge": 0.5}))
    with pytest.raises(ConfigError, match=r"max_share\['big'\] = 1.5"):
        parse_config(run_config(max_share={"big": 1.5}))

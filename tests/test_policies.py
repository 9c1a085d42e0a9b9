"""Routing policies: argmax, temperature sampling, and the budget/quota assignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from persyn.config import ConfigError, RoutingPolicyConfig, parse_config
from persyn.policies import (
    EXACT_MAX_VARIABLES,
    POLICIES,
    BudgetPolicy,
    cost_per_prompt,
    expected_reward,
    make_policy,
    policy_report,
)

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
    """The largest total expected reward (what the budget policy maximises) over every
    assignment within the budget and caps."""
    reward = expected_reward(scores)
    best = -np.inf
    for choice in itertools.product(range(scores.shape[1]), repeat=len(scores)):
        picked = np.array(choice)
        if COST[picked].sum() > budget + 1e-9:
            continue
        if any((picked == t).sum() > cap for t, cap in caps.items()):
            continue
        best = max(best, reward[np.arange(len(scores)), picked].sum())
    return best


@pytest.mark.parametrize("seed", range(5))
def test_budget_assignment_is_optimal_and_within_budget_and_quota(seed: int) -> None:
    scores = np.random.default_rng(seed).normal(size=(5, 3))
    budget = 4.0
    choice = choose(scores, kind="budget", budget=budget, max_share={"mid": 0.4})
    assert COST[choice].sum() <= budget + 1e-9
    assert (choice == 1).sum() <= 2
    total = expected_reward(scores)[np.arange(5), choice].sum()
    assert total == pytest.approx(best_by_brute_force(scores, budget, {1: 2}))


def test_expected_reward_is_the_mean_pairwise_win_probability() -> None:
    scores = np.array([[2.0, 0.0, -1.0]])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    by_hand = [
        (sig(2) + sig(3)) / 2,
        (sig(-2) + sig(1)) / 2,
        (sig(-3) + sig(-1)) / 2,
    ]
    assert expected_reward(scores)[0] == pytest.approx(by_hand)
    # A per-prompt constant changes no Bradley-Terry preference, so no expected reward.
    assert expected_reward(scores + 7.5) == pytest.approx(expected_reward(scores))


@pytest.mark.parametrize("solver", ["exact", "relaxed"])
def test_a_per_prompt_constant_changes_no_budget_assignment(solver: str) -> None:
    scores = np.random.default_rng(3).normal(size=(40, 3))
    policy = make_policy(RoutingPolicyConfig(kind="budget", budget=30.0), TEACHERS, COST)
    shifted = scores + np.random.default_rng(4).normal(scale=50, size=(40, 1))
    choice = getattr(policy, solver)(scores)
    assert (getattr(policy, solver)(shifted) == choice).all()
    assert (choice != scores.argmax(axis=1)).any()  # the budget binds


@pytest.mark.parametrize("solver", ["exact", "relaxed"])
def test_budget_buys_win_probability_not_logit_gaps(solver: str) -> None:
    """One upgrade to the paid teacher fits the budget. Prompt A's logit gap to the free
    teacher is larger (3 > 2.5), but the third teacher is far behind there, so the free one
    already beats it: the upgrade wins A 0.45 of expected reward (mean win probability)
    and B 0.70, where the free teacher loses to both. Logits would upgrade A."""
    scores = np.array([[0.0, 3.0, -100.0], [0.0, 2.5, 1.25]])
    cost = np.array([0.0, 1.0, 100.0])
    policy = BudgetPolicy(RoutingPolicyConfig(kind="budget", budget=1.0), TEACHERS, cost)
    gain = expected_reward(scores)[:, 1] - expected_reward(scores)[:, 0]
    assert gain == pytest.approx([0.4526, 0.7014], abs=1e-4)
    assert getattr(policy, solver)(scores).tolist() == [0, 1]


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
    no_prompt = {"big": 0.0, "small": 0.0}
    cost = cost_per_prompt(cfg, {"big": 400.0, "small": 20.0}, no_prompt)
    assert cost == pytest.approx([3.0 * 0.4, 0.5 * 0.1])
    with pytest.raises(ConfigError, match="teacher 'big' has a price but no calibration"):
        cost_per_prompt(cfg, {}, no_prompt)


def test_prompt_and_completion_tokens_have_their_own_prices() -> None:
    data = run_config(kind="budget")
    data["teachers"][0] = {  # type: ignore[index]
        "name": "big",
        "backend": "scripted",
        "model": "solver-quick",
        "cost_per_1k_input_tokens": 1.0,
        "cost_per_1k_output_tokens": 4.0,
    }
    cfg = parse_config(data)
    cost = cost_per_prompt(cfg, {"big": 100.0, "small": 20.0}, {"big": 500.0, "small": 500.0})
    # big: 500 prompt tokens at 1.0 + 100 completion tokens at 4.0 per 1K; small's old
    # `cost_per_1k_tokens` is its output price, its prompt tokens free.
    assert cost == pytest.approx([0.5 + 0.4, 0.5 * 0.02])
    assert cfg.teachers[1].cost_per_1k_output_tokens == 0.5
    both = {**data["teachers"][1], "cost_per_1k_output_tokens": 0.7}  # type: ignore[index]
    with pytest.raises(ConfigError, match="cost_per_1k_tokens is the old name of"):
        parse_config({**data, "teachers": [data["teachers"][0], both]})  # type: ignore[index]


def test_config_rejects_quotas_for_unknown_teachers_and_bad_shares() -> None:
    with pytest.raises(ConfigError, match=r"routing\.max_share: unknown teacher 'huge'"):
        parse_config(run_config(max_share={"huge": 0.5}))
    with pytest.raises(ConfigError, match=r"max_share\['big'\] = 1.5"):
        parse_config(run_config(max_share={"big": 1.5}))


def priced_instance(n_prompts: int, n_teachers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Router scores in [0, 1] and prices per prompt spread over two orders of magnitude,
    the pricier teachers better on average (as real pools are)."""
    rng = np.random.default_rng(seed)
    cost = np.sort(np.exp(rng.uniform(np.log(1e-4), np.log(3e-2), n_teachers)))
    quality = 0.4 + 0.1 * np.log10(cost / cost[0])
    scores = np.clip(quality + 0.2 * rng.normal(size=(n_prompts, n_teachers)), 0, 1)
    return scores, cost


def budget_policy(cost: np.ndarray, **cfg: object) -> BudgetPolicy:
    teachers = [f"t{i}" for i in range(len(cost))]
    return BudgetPolicy(RoutingPolicyConfig(kind="budget", **cfg), teachers, cost)


def assert_within_limits(policy: BudgetPolicy, choice: np.ndarray) -> None:
    if policy.cfg.budget is not None:
        assert policy.cost[choice].sum() <= policy.cfg.budget + 1e-9
    counts = np.bincount(choice, minlength=len(policy.cost))
    for name, share in policy.cfg.max_share.items():
        assert counts[policy.teachers.index(name)] <= np.floor(share * len(choice))


def total(scores: np.ndarray, choice: np.ndarray) -> float:
    return float(scores[np.arange(len(scores)), choice].sum())


def limits(kind: str, scores: np.ndarray, cost: np.ndarray) -> dict[str, object]:
    """A budget (a share of argmax's cost) and/or quotas on the three best, priciest teachers."""
    cfg: dict[str, object] = {}
    if "budget" in kind:
        cfg["budget"] = 0.35 * cost[scores.argmax(axis=1)].sum()
    if "quotas" in kind:
        cfg["max_share"] = {f"t{len(cost) - i}": 0.03 for i in (1, 2, 3)}
    return cfg


@pytest.mark.parametrize(
    ("n_prompts", "n_teachers", "kind"),
    [(2000, 20, "budget"), (2000, 20, "budget and quotas"), (5000, 10, "quotas")],
)
def test_relaxed_meets_the_limits_within_a_tenth_of_a_percent_of_exact(
    n_prompts: int, n_teachers: int, kind: str
) -> None:
    scores, cost = priced_instance(n_prompts, n_teachers, seed=n_prompts)
    policy = budget_policy(cost, **limits(kind, scores, cost))
    relaxed, exact = policy.relaxed(scores), policy.exact(scores)
    assert_within_limits(policy, relaxed)
    reward = expected_reward(scores)
    assert total(reward, relaxed) >= total(reward, exact) * (1 - 1e-3)


def test_relaxed_finds_a_known_optimum_above_the_exact_size_limit() -> None:
    # Teacher 1 costs 1 and beats free teacher 0 by a distinct margin per prompt; teacher 2
    # is worse and pricier than both. With room for k prompts on teacher 1, the optimum
    # sends it the k largest margins, under a budget or under a quota alike.
    n_prompts, k = 30_000, 7_000
    assert n_prompts * 3 > EXACT_MAX_VARIABLES
    margin = np.random.default_rng(0).permutation(n_prompts) / n_prompts + 0.1
    scores = np.stack([np.zeros(n_prompts), margin, np.full(n_prompts, -1.0)], axis=1)
    best = np.zeros(n_prompts, dtype=np.int64)
    best[np.argsort(-margin)[:k]] = 1
    cost = np.array([0.0, 1.0, 2.0])
    for cfg in ({"budget": float(k)}, {"max_share": {"t1": k / n_prompts}}):
        policy = budget_policy(cost, **cfg)
        assert (policy.choose(scores) == best).all()


def test_relaxed_budget_spends_leftovers_on_tied_prompts() -> None:
    # Identical prompts all change teacher at the same price of money: the bisection lands
    # on the cheap side and the fill has to bring back as many as the budget allows.
    scores = np.tile([3.0, 2.0, 1.0], (1000, 1))
    policy = budget_policy(COST, budget=1000 * 1.0 + 2.0)
    relaxed = policy.relaxed(scores)
    assert_within_limits(policy, relaxed)
    reward = expected_reward(scores)
    assert total(reward, relaxed) == pytest.approx(total(reward, policy.exact(scores)))


@pytest.mark.parametrize("solver", ["exact", "relaxed"])
def test_a_budget_and_quotas_that_fit_apart_but_not_together_fail(solver: str) -> None:
    # The budget pays for every prompt on the cheapest teacher, which may take only half.
    policy = budget_policy(COST, budget=0.2 * 100, max_share={"t2": 0.5})
    with pytest.raises(ConfigError, match=r"no assignment of 100 prompts meets budget"):
        getattr(policy, solver)(np.zeros((100, 3)))

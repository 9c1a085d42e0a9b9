"""`persyn eval-router`, learning curves, calibration selection, and the route stage's policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.calibration_select import (
    carry_over_selection,
    kcenter_selection,
    random_selection,
    select_calibration,
)
from persyn.config import CalibrationConfig, RouterConfig, parse_config
from persyn.eval.routers import (
    HeldOut,
    budget_curve,
    compare_routers,
    compare_selection,
    learning_curve,
)
from persyn.method import failure_reward
from persyn.pipeline import Run, run_stage
from persyn.router.encoder import PromptEncoder
from persyn.router.metrics import best_fixed_teacher, routing_metrics
from persyn.router.routers import make_router

TEACHERS = ["fruit-expert", "water-expert", "weak"]
PHRASES = ["tell me about the", "write a poem on the", "explain the", "a fact about the"]


def planted(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Prompts about apples suit teacher 0, about rivers teacher 1; teacher 2 is worst."""
    rng = np.random.default_rng(seed)
    texts = [f"{PHRASES[rng.integers(4)]} {['apple', 'river'][i % 2]}" for i in range(n)]
    best = np.array([[1.0, 0.4, 0.0], [0.4, 1.0, 0.0]])[np.arange(n) % 2]
    return texts, best + rng.normal(0, 0.05, (n, 3))


@pytest.fixture(scope="module")
def held_out() -> HeldOut:
    return HeldOut(TEACHERS, *planted(24, 0), *planted(12, 1), *planted(12, 2))


FAST = RouterConfig(epochs=40, knn_k=3)


@pytest.fixture(scope="module")
def encoder() -> PromptEncoder:
    """One packaged MiniLM for every router here (it memoises each prompt's embedding)."""
    return PromptEncoder(FAST.backbone)


def test_routers_side_by_side_with_the_oracle(held_out: HeldOut, encoder: PromptEncoder) -> None:
    kinds = ["bradley-terry", "knn", "best-fixed", "random"]
    results = compare_routers(held_out, FAST, kinds, encoder)
    assert list(results) == ["bradley-terry", "knn", "best-fixed", "random", "oracle"]
    assert results["oracle"]["top1"] == 1.0 and results["oracle"]["captured"] == 1.0
    assert results["oracle"]["regret"] == 0.0
    for learned in ("bradley-terry", "knn"):
        assert results[learned]["top1"] == 1.0
        assert results[learned]["captured"] > results["best-fixed"]["captured"] + 0.5
    with pytest.raises(ValueError, match="unknown router 'gpt'"):
        compare_routers(held_out, FAST, ["gpt"])


def test_learning_curve_covers_each_size_once(held_out: HeldOut, encoder: PromptEncoder) -> None:
    rows = learning_curve(held_out, FAST, [1, 4, 12, 100], repeats=2, encoder=encoder)
    assert [r["calibration_prompts"] for r in rows] == [4, 12, 24]
    assert all(0 <= r["top1"] <= 1 for r in rows)
    assert rows[-1]["captured"] > 0.9


def test_kcenter_picks_one_prompt_per_cluster_where_random_may_not() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3]
    points = np.concatenate(
        [c + rng.normal(0, 0.01, (n, 4)) for c, n in zip(centres, [40, 5, 5], strict=True)]
    )
    picked = kcenter_selection(points, 3, seed=0)
    assert sorted(np.searchsorted([40, 45], picked, side="right")) == [0, 1, 2]
    assert len(set(kcenter_selection(points, 50, seed=1))) == 50


def test_random_strategy_draws_what_prepare_always_drew() -> None:
    import random

    ids = [f"p{i:03d}" for i in range(60)]
    cfg = CalibrationConfig(size=10, seed=7)
    assert select_calibration(cfg, ids, ids) == sorted(random.Random(7).sample(ids, 10))
    assert random_selection(5, 10, 0) == random_selection(5, 10, 0)


def test_carry_over_keeps_calibration_prompts_and_stays_uniform() -> None:
    import random
    from collections import Counter

    old = [f"p{i:03d}" for i in range(40)]
    ids = old + [f"n{i:03d}" for i in range(20)]
    previous = sorted(random.Random(7).sample(old, 10))
    # nothing changed: the same calibration set
    assert carry_over_selection(previous, old, old, 10, 7) == previous
    picked = carry_over_selection(previous, old, ids, 10, 7)
    assert len(set(picked)) == 10 and set(picked) <= set(ids)
    assert all(p in previous for p in picked if p.startswith("p"))  # old slots: kept ones
    # over draws, every prompt of the edited file is as likely to calibrate (10 / 60)
    counts: Counter[str] = Counter()
    for seed in range(3000):
        before = random.Random(seed).sample(old, 10)
        counts.update(carry_over_selection(before, old, ids, 10, seed))
    share_old = sum(counts[i] for i in old) / (3000 * 10)
    assert abs(share_old - 40 / 60) < 0.02
    assert max(counts.values()) / min(counts.values()) < 1.5


def test_selection_strategies_compared_at_equal_size(
    held_out: HeldOut, encoder: PromptEncoder
) -> None:
    rows = compare_selection(held_out, FAST, [6, 12], repeats=1, encoder=encoder)
    assert [(r["strategy"], r["calibration_prompts"]) for r in rows] == [
        (s, n) for n in (6, 12) for s in ("random", "kcenter", "uncertainty")
    ]
    assert all(0 <= r["captured"] <= 1.0 + 1e-9 for r in rows)


def test_budget_curve_trades_reward_for_money() -> None:
    scores = np.array([[2.0, 1.0, 0.0]] * 20)
    reward = np.array([[1.0, 0.7, 0.2]] * 20)
    rows = budget_curve(scores, reward, np.array([1.0, 0.5, 0.1]), TEACHERS)
    costs = [r["cost"] for r in rows]
    assert costs == sorted(costs, reverse=True) and costs[0] == pytest.approx(20.0)
    assert rows[0]["reward_given_up"] == 0.0
    assert rows[-1]["reward_given_up"] > 0 and rows[-1]["money_saved"] > 0


@pytest.mark.parametrize("n_reward", [12, 30])
def test_budget_curve_refuses_rewards_of_other_prompts(n_reward: int) -> None:
    """bench_router gave test-split scores with validation rewards: with fewer rewards an
    IndexError, with more a curve measured on the wrong prompts, silently."""
    scores = np.array([[2.0, 1.0, 0.0]] * 20)
    reward = np.array([[1.0, 0.7, 0.2]] * n_reward)
    with pytest.raises(ValueError, match=rf"scores \(20, 3\) and rewards \({n_reward}, 3\)"):
        budget_curve(scores, reward, np.array([1.0, 0.5, 0.1]), TEACHERS)


@pytest.fixture(scope="module")
def scored_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny run taken through `score` (tiny LLM teacher + solvers, tiny student)."""
    run_dir = tmp_path_factory.mktemp("router-eval-run")
    data = tiny_run_config(tiny_lm_dir, run_dir)
    data["calibration"]["size"] = 20
    # Greedy, the random tiny LM repeats a newline (an empty answer); sampling gives text.
    data["teachers"][0]["generation"] = {"max_new_tokens": 8, "temperature": 1.0}
    run_stage(Run.open(parse_config(data), str(run_dir)), "score")
    return run_dir, data


def test_eval_router_command_writes_its_tables(scored_run: tuple[Path, dict]) -> None:
    from persyn.cli import app

    run_dir, data = scored_run
    config = run_dir / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(
        app,
        ["eval-router", str(config), "--routers", "bradley-terry,knn,best-fixed,random", "-q"],
    )
    assert result.exit_code == 0, result.output
    table = (run_dir / "router" / "eval.md").read_text()
    assert "| bradley-terry |" in table and "| oracle | 1.000 |" in table
    assert "Learning curve" in table
    stored = json.loads((run_dir / "router" / "eval.json").read_text())
    # 20 calibration prompts: 5 test, 5 validation (conftest's fractions), 10 train
    assert stored["test_prompts"] == 5 and stored["val_prompts"] == 5
    assert stored["train_prompts"] == 10


def test_route_stage_applies_the_budget_policy(scored_run: tuple[Path, dict]) -> None:
    run_dir, data = scored_run
    teachers = [{**t, "cost_per_1k_tokens": 1.0} for t in data["teachers"]]
    quota = {"kind": "budget", "max_share": {t["name"]: 0.3 for t in teachers}}
    cfg = parse_config({**data, "teachers": teachers, "routing": quota})
    run = Run.open(cfg, str(run_dir))
    run_stage(run, "route")
    routes = [json.loads(line) for line in (run_dir / "routes.jsonl").open()]
    counts = {t["name"]: sum(r["teacher"] == t["name"] for r in routes) for t in teachers}
    assert max(counts.values()) <= int(0.3 * len(routes))
    marker = run.store.marker("route")
    assert marker["policy"]["prompts"] == len(routes) == 10


def test_prepare_with_kcenter_selection(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = tiny_run_config(tiny_lm_dir, tmp_path)
    data["calibration"] = {"size": 12, "strategy": "kcenter"}
    run = Run.open(parse_config(data), str(tmp_path))
    run_stage(run, "prepare")
    split = run.store.split()
    assert len(split.calibration) == 12 == len(set(split.calibration))
    kinds = {p.kind for p in run.prompts if p.id in set(split.calibration)}
    assert kinds == {"math", "instruction"}  # diversity: both kinds of prompt are covered


def test_router_is_charged_the_real_reward_of_its_choice() -> None:
    """A failed teacher (-inf) costs the router; a prompt no teacher answered is left out."""
    reward = np.array(
        [
            [1.0, -np.inf, 0.0],  # the router picks teacher 1, which failed
            [np.nan, np.nan, np.nan],  # nobody answered: not a top-1 hit, not counted
            [0.2, 0.9, 0.5],
        ]
    )
    scores = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m = routing_metrics(scores, reward, fixed_teacher=0, failure_reward=0.0)
    assert m["prompts"] == 2 and m["prompts_without_reward"] == 1
    assert m["top1"] == 0.5  # only the third prompt
    assert m["reward"] == pytest.approx((0.0 + 0.9) / 2)  # failed choice earns 0
    assert m["routed_to_failed"] == 0.5
    assert m["oracle_reward"] == pytest.approx((1.0 + 0.9) / 2)
    assert m["best_fixed_reward"] == pytest.approx((1.0 + 0.2) / 2)
    # the failed answer is below every answer: (0 over 1), (2 over 1), (1 over 0, 2), ...
    assert m["pairwise_accuracy"] == pytest.approx(3 / 6)
    assert np.isfinite([m[k] for k in ("reward", "regret", "captured")]).all()


def test_under_zscore_a_failure_is_charged_the_bottom_not_the_mean() -> None:
    """z-scores centre each prompt on 0: charging 0 would make a failure as good as an
    average answer, and routing to it would beat the worst answer."""
    reward = np.array([[1.2247, 0.0, -1.2247, -np.inf]])  # z-scores of 3 answers + a failure
    charge = failure_reward("zscore", 4)
    m = routing_metrics(np.array([[0, 0, 0, 1.0]]), reward, fixed_teacher=0, failure_reward=charge)
    assert m["reward"] == pytest.approx(-np.sqrt(3)) and m["reward"] < -1.2247
    assert failure_reward("minmax", 4) == failure_reward("rank", 4) == 0.0


def test_best_fixed_is_chosen_on_train_and_only_teachers_that_generate_count() -> None:
    train = np.array([[1.0, 0.0, 0.5, 0.9], [1.0, 0.0, 0.5, 0.9]])
    test = np.array([[0.0, 1.0, 0.5, 1.0], [0.0, 1.0, 0.5, 1.0]])
    able = [0, 1, 2]  # teacher 3 is known from imported answers only
    fixed = best_fixed_teacher(train, 0.0, able)
    assert fixed == 0  # best on the train split, though the worst on test
    scores = np.array([[0.0, 0.0, 0.0, 9.0], [0.0, 0.0, 0.0, 9.0]])  # prefers teacher 3
    m = routing_metrics(scores, test, fixed_teacher=fixed, failure_reward=0.0, teachers=able)
    assert m["best_fixed_teacher"] == 0 and m["best_fixed_reward"] == 0.0
    # the router's choice among teachers 0-2 (all scored 0: the first) and the oracle's
    assert m["reward"] == 0.0 and m["oracle_reward"] == 1.0
    assert m["random_reward"] == pytest.approx(0.5)  # mean of 0, 1, 0.5: not teacher 3's 1
    with pytest.raises(ValueError, match="fixed_teacher 3"):
        routing_metrics(scores, test, fixed_teacher=3, failure_reward=0.0, teachers=able)


def test_random_router_draw_depends_on_the_prompt_not_its_position() -> None:
    router = make_router(RouterConfig(kind="random", seed=3), TEACHERS)
    texts = [f"prompt {i}" for i in range(600)]  # more than one routing chunk
    whole = router.scores(texts)
    assert np.array_equal(router.scores(texts[::-1]), whole[::-1])
    assert np.array_equal(router.scores(texts[300:]), whole[300:])
    assert len({tuple(row.argmax() for row in whole[i : i + 256]) for i in (0, 256)}) == 2
    other_seed = make_router(RouterConfig(kind="random", seed=4), TEACHERS).scores(texts)
    assert not np.array_equal(other_seed, whole)


def test_split_keeps_test_prompts_out_of_training_and_epoch_choice(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    data = tiny_run_config(tiny_lm_dir, tmp_path)
    data["calibration"] = {"size": 20}
    data["router"] = {"val_fraction": 0.2, "test_fraction": 0.3}
    run = Run.open(parse_config(data), str(tmp_path))
    run_stage(run, "prepare")
    split = run.store.split()
    parts = [set(split.router_train), set(split.router_val), set(split.router_test)]
    assert [len(p) for p in parts] == [10, 4, 6]
    assert set.union(*parts) == set(split.calibration)
    assert sum(len(p) for p in parts) == len(split.calibration)


def test_fractions_must_leave_training_prompts() -> None:
    with pytest.raises(ValueError, match="must leave calibration prompts to train on"):
        RouterConfig(val_fraction=0.5, test_fraction=0.5)

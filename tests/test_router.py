"""A Bradley-Terry head recovers a planted preference, and its checkpoint round-trips (the
pairs, the loss and the batches: tests/test_method.py); train-router trains on failed
answers as lost pairs and refits the router that routes on train + validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_bad_input import flaky_config

from persyn.config import RouterConfig, parse_config
from persyn.method import RouterData
from persyn.pipeline import Run, run_stage
from persyn.router.bradley_terry import load_trained, save_trained
from persyn.router.heads import build_head, fit_head, head_scores
from persyn.router.routers import Router, make_router
from persyn.stages.train_router import refit_config


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features whose first coordinate decides the best of three teachers; the others are noise.
    Teacher 0 wins when x0 < -0.33, teacher 2 when x0 > 0.33, teacher 1 in between."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 8)).astype(np.float32)
    best = np.digitize(x[:, 0], [-1 / 3, 1 / 3])
    reward = rng.uniform(0, 0.5, size=(n, 3))
    reward[np.arange(n), best] = 1.0
    return x, reward


def test_router_recovers_planted_preference() -> None:
    x, reward = planted(400, seed=0)
    x_test, reward_test = planted(200, seed=1)
    cfg = RouterConfig(hidden_size=32, epochs=150, learning_rate=0.01, batch_pairs=512)
    head = build_head("linear", in_dim=8, n_teachers=3, cfg=cfg)
    fit = fit_head(head, RouterData(x[:300], reward[:300], x[300:], reward[300:]), cfg)
    assert fit["pairs"] == 300 * 3
    choice = head_scores(head, x_test).argmax(axis=1)
    agreement = float(np.mean(choice == reward_test.argmax(axis=1)))
    assert agreement >= 0.9, agreement


def test_save_load_round_trip(tmp_path) -> None:
    x, reward = planted(60, seed=2)
    cfg = RouterConfig(epochs=5)
    head = build_head("linear", 8, 3, cfg)
    fit_head(head, RouterData(x, reward), cfg)
    save_trained(head, tmp_path / "head.pt")
    again = build_head("linear", 8, 3, cfg.model_copy(update={"seed": 1}))
    load_trained(again, tmp_path / "head.pt")
    np.testing.assert_allclose(head_scores(again, x), head_scores(head, x))


# Issue 23: failed answers in training; the router that routes is refit on train + val.


@pytest.fixture(scope="module")
def flaky_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`flaky` is right wherever it answers and fails on prompt ids ending in 3 or 7;
    `wrong` always answers, wrongly. A Bradley-Terry router, trained up to train-router."""
    data = flaky_config(tiny_lm_dir, tmp_path_factory.mktemp("flaky") / "run", 0.3)
    data["router"] = {"epochs": 15, "val_fraction": 0.25, "test_fraction": 0.25}
    run = Run.open(parse_config(data))
    run_stage(run, "train-router")
    return run


def test_a_failed_answer_is_a_lost_pair_in_training(flaky_run: Run) -> None:
    split, rewards = flaky_run.store.split(), flaky_run.store.rewards()
    failing = {pid for pid in split.calibration if pid[-1] in "37"}
    failed = {pid for pid, row in zip(rewards.ids, rewards.failed, strict=True) if row[0]}
    assert failed == failing and not rewards.failed[:, 1].any()
    train_failing = failing & set(split.router_train)
    assert train_failing, "the draw put no failing prompt in the router's train split"
    # every train prompt is one ordered pair: flaky over wrong, or wrong over failed flaky
    metrics = flaky_run.store.router_metrics()
    assert metrics["pairs"] == len(split.router_train)
    train = rewards.subset(split.router_train).routing_reward
    assert all(train[i, 0] == -np.inf for i, pid in enumerate(split.router_train) if pid in failing)


def test_the_router_that_routes_is_refit_on_train_and_validation(flaky_run: Run) -> None:
    cfg, store = flaky_run.cfg, flaky_run.store
    split, rewards = store.split(), store.rewards()
    metrics = store.router_metrics()
    routing = metrics["routing_model"]
    assert routing["refit"] is True and routing["epochs"] == metrics["best_epoch"] + 1
    assert routing["train_prompts"] == len(split.router_train) + len(split.router_val)
    texts = {p.id: p.text for p in flaky_run.prompts}
    saved = Router.load(store.router_dir(), cfg.teacher_names)
    # the same as a router fit by hand on train + validation for those epochs, same seed
    ids = split.router_train + split.router_val
    by_hand = make_router(refit_config(cfg.router, routing["epochs"]), cfg.teacher_names)
    by_hand.fit([texts[i] for i in ids], rewards.subset(ids).routing_reward)
    test_texts = [texts[i] for i in split.router_test]
    np.testing.assert_allclose(saved.scores(test_texts), by_hand.scores(test_texts), atol=1e-6)
    # the test split reports the held-out model (trained on train only), the refit beside it
    held_out = [list(r["router_scores"].values()) for r in store.test_predictions()]
    assert not np.allclose(held_out, saved.scores(test_texts), atol=1e-4)
    assert set(metrics["test"]) == set(routing["test"])


def test_refit_can_be_switched_off(flaky_run: Run) -> None:
    cfg = flaky_run.cfg.model_copy(deep=True)
    cfg.router.refit = False
    run = Run(cfg, flaky_run.store, flaky_run.executor)
    run_stage(run, "train-router")
    assert run.store.router_metrics()["routing_model"] == {"refit": False, "train_prompts": 10}
    saved = Router.load(run.store.router_dir(), cfg.teacher_names)
    texts = {p.id: p.text for p in run.prompts}
    held_out = [list(r["router_scores"].values()) for r in run.store.test_predictions()]
    scores = saved.scores([texts[i] for i in run.store.split().router_test])
    np.testing.assert_allclose(held_out, scores, atol=1e-4)

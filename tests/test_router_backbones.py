"""Router backbones: the paper's fine-tuned LM router (LoRA or full) and the encoder routers.

Planted preference: prompts ending in "apple" are best answered by teacher 0, prompts
ending in "river" by teacher 1; teacher 2 is always worst.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from persyn.config import ConfigError, RouterConfig
from persyn.method import training_pairs
from persyn.router.metrics import routing_metrics
from persyn.router.routers import ROUTERS, Router, make_router

TEACHERS = ["fruit-expert", "water-expert", "weak"]
SUBJECTS = ["tell me about", "write a poem on", "explain", "describe the", "a fact about"]


def planted(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, reward = [], []
    for i in range(n):
        topic = ["apple", "river"][i % 2]
        texts.append(f"{SUBJECTS[rng.integers(len(SUBJECTS))]} the {topic}")
        best = np.array([1.0, 0.3, 0.0]) if topic == "apple" else np.array([0.3, 1.0, 0.0])
        reward.append(best + rng.normal(0, 0.05, 3))
    return texts, np.array(reward)


def lm_config(tiny_lm_dir: Path, **lm: object) -> RouterConfig:
    settings = {"epochs": 12, "learning_rate": 1e-2, "batch_size": 4, "lora_r": 4, **lm}
    return RouterConfig(kind="lm-bradley-terry", backbone=str(tiny_lm_dir), lm=settings)


@pytest.fixture(scope="module")
def planted_data() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    return (*planted(16, 0), *planted(8, 1))


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_lm_router_learns_a_planted_preference(
    tiny_lm_dir: Path, planted_data: tuple, finetune: str
) -> None:
    texts, reward, val_texts, val_reward = planted_data
    router = make_router(lm_config(tiny_lm_dir, finetune=finetune), TEACHERS)
    fit = router.fit(texts, reward, val_texts, val_reward)
    assert fit["history"][fit["best_epoch"]]["val_loss"] < fit["history"][0]["val_loss"]
    held = routing_metrics(
        router.scores(val_texts), val_reward, fixed_teacher=0, failure_reward=0.0
    )
    assert held["top1"] == 1.0


def test_lm_checkpoint_keeps_only_trained_tensors_and_reloads_exactly(
    tiny_lm_dir: Path, planted_data: tuple, tmp_path: Path
) -> None:
    import torch

    texts, reward, val_texts, val_reward = planted_data
    router = make_router(lm_config(tiny_lm_dir, epochs=2), TEACHERS)
    router.fit(texts, reward, val_texts, val_reward)
    router.save(tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert saved and all("lora_" in k or k.startswith("head.") for k in saved)
    meta = json.loads((tmp_path / "router.json").read_text())
    assert meta["router"] == "lm-bradley-terry" and meta["teachers"] == TEACHERS
    again = Router.load(tmp_path, TEACHERS)
    assert np.allclose(again.scores(val_texts), router.scores(val_texts), atol=1e-5)


def test_a_checkpoint_refuses_another_teacher_pool(tmp_path: Path) -> None:
    texts, reward = planted(10, 0)
    router = make_router(RouterConfig(kind="best-fixed"), TEACHERS)
    router.fit(texts, reward)
    router.save(tmp_path)
    with pytest.raises(ConfigError, match=r"trained for teachers .*retrain it"):
        Router.load(tmp_path, ["fruit-expert", "weak", "water-expert"])
    with pytest.raises(ConfigError, match="no router checkpoint"):
        Router.load(tmp_path / "missing", TEACHERS)


def test_an_unreadable_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    """A checkpoint from before the router registry (no "router" field), or one missing its
    weights, asks for `persyn train-router` instead of loading something half right."""
    old = {"teachers": TEACHERS, "in_dim": 384, "head": "linear", "config": {"epochs": 5}}
    (tmp_path / "router.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="rerun `persyn train-router`") as refused:
        Router.load(tmp_path, TEACHERS)
    assert "\n" not in str(refused.value)
    knn = {"router": "knn", "teachers": TEACHERS, "config": {"kind": "knn"}}
    (tmp_path / "router.json").write_text(json.dumps(knn))  # knn.npz was never written
    with pytest.raises(ConfigError, match=r"knn\.npz.*rerun `persyn train-router`"):
        Router.load(tmp_path, TEACHERS)


def test_lm_router_training_is_deterministic(tiny_lm_dir: Path, planted_data: tuple) -> None:
    texts, reward, val_texts, val_reward = planted_data
    scores = []
    for _ in range(2):
        router = make_router(lm_config(tiny_lm_dir, epochs=2, lora_dropout=0.1), TEACHERS)
        router.fit(texts, reward, val_texts, val_reward)
        scores.append(router.scores(val_texts))
    assert np.array_equal(scores[0], scores[1])


@pytest.mark.parametrize("kind", ["bradley-terry", "mf", "knn"])
def test_encoder_routers_learn_the_planted_preference_and_round_trip(
    kind: str, planted_data: tuple, tmp_path: Path
) -> None:
    texts, reward, val_texts, val_reward = planted_data
    router = make_router(RouterConfig(kind=kind, epochs=60, knn_k=3), TEACHERS)
    router.fit(texts, reward, val_texts, val_reward)
    scores = router.scores(val_texts)
    assert routing_metrics(scores, val_reward, fixed_teacher=0, failure_reward=0.0)["top1"] == 1.0
    router.save(tmp_path)
    assert np.allclose(Router.load(tmp_path, TEACHERS).scores(val_texts), scores, atol=1e-6)


def test_baseline_routers() -> None:
    texts, reward = planted(20, 0)
    reward[:, 1] += 0.2  # the water expert is best on average
    fixed = make_router(RouterConfig(kind="best-fixed"), TEACHERS)
    fixed.fit(texts, reward)
    assert (fixed.scores(texts[:5]).argmax(axis=1) == 1).all()
    rand = make_router(RouterConfig(kind="random", seed=4), TEACHERS)
    rand.fit(texts, reward)
    assert np.array_equal(rand.scores(texts), rand.scores(texts))
    assert len(set(rand.scores(texts).argmax(axis=1))) == 3
    assert {"bradley-terry", "mf", "knn", "lm-bradley-terry", "best-fixed", "random"} <= set(
        ROUTERS
    )
    assert [k for k in ROUTERS if ROUTERS.load(k).loads_model] == sorted(
        {"bradley-terry", "mf", "knn", "lm-bradley-terry"}
    )


def test_early_stopping_keeps_the_best_epoch() -> None:
    rng = np.random.default_rng(0)
    texts, reward = planted(12, 0)
    noise = rng.normal(size=(12, 3))  # unlearnable validation rewards: val loss soon rises
    cfg = RouterConfig(epochs=300, learning_rate=0.05, patience=5)
    router = make_router(cfg, TEACHERS)
    fit = router.fit(texts, reward, texts[::-1], noise)
    assert len(fit["history"]) < 300
    assert len(fit["history"]) == fit["best_epoch"] + 1 + 5


def test_ties_are_skipped_or_trained_towards_one_half() -> None:
    reward = np.array([[0.5, 0.5, 0.1]])
    pairs, targets = training_pairs(reward, 1e-6, "skip")
    assert pairs.tolist() == [[0, 0, 2], [0, 1, 2]] and targets.tolist() == [1, 1]
    pairs, targets = training_pairs(reward, 1e-6, "half")
    assert pairs.tolist() == [[0, 0, 2], [0, 1, 2], [0, 0, 1]]
    assert targets.tolist() == [1, 1, 0.5]
    texts = ["apple pie", "river bank"] * 6
    tie_reward = np.tile([0.5, 0.5, 0.0], (12, 1))
    router = make_router(RouterConfig(epochs=100, ties="half", hidden_size=0), TEACHERS)
    router.fit(texts, tie_reward)
    s = router.scores(texts)
    assert np.abs(s[:, 0] - s[:, 1]).max() < 0.1 < (s[:, 0] - s[:, 2]).min()

"""A Bradley-Terry head recovers a planted preference, and its checkpoint round-trips (the
pairs, the loss and the batches: tests/test_method.py)."""

from __future__ import annotations

import numpy as np

from persyn.config import RouterConfig
from persyn.method import RouterData
from persyn.router.bradley_terry import load_trained, save_trained
from persyn.router.heads import build_head, fit_head, head_scores


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

"""The Bradley-Terry loss, its gradient, the preference pairs, and a planted preference."""

from __future__ import annotations

import numpy as np
import torch

from persyn.config import RouterConfig
from persyn.router.bradley_terry import (
    RouterData,
    bradley_terry_loss,
    load_trained,
    preference_pairs,
    save_trained,
    tied_pairs,
    training_pairs,
)
from persyn.router.heads import build_head, fit_head, head_scores


def test_preference_pairs_skip_ties_and_missing() -> None:
    reward = np.array([[0.1, 0.5, 0.5, np.nan], [0.9, 0.2, 0.3, 0.3]])
    pairs = {tuple(p) for p in preference_pairs(reward).tolist()}
    # rows are (prompt, winner, loser); (0, 1, 2) and (1, 2, 3) are ties, teacher 3 of
    # prompt 0 has no reward
    assert pairs == {(0, 1, 0), (0, 2, 0), (1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 2, 1), (1, 3, 1)}
    assert {tuple(p) for p in tied_pairs(reward).tolist()} == {(0, 1, 2), (1, 2, 3)}


def test_half_targets_for_ties() -> None:
    reward = np.array([[0.1, 0.5, 0.5]])
    pairs, targets = training_pairs(reward, 1e-6, "half")
    assert len(pairs) == 3 and sorted(targets.tolist()) == [0.5, 1.0, 1.0]
    pairs, targets = training_pairs(reward, 1e-6, "skip")
    assert len(pairs) == 2 and targets.tolist() == [1.0, 1.0]


def test_loss_by_hand() -> None:
    scores = torch.tensor([[2.0, 0.5, -1.0]])
    pairs = torch.tensor([[0, 0, 1], [0, 2, 1]])  # winner 0 over 1; winner 2 over 1
    m = torch.tensor([1.5, -1.5])
    expected = -torch.log(torch.sigmoid(m)).mean()
    assert torch.isclose(bradley_terry_loss(scores, pairs), expected)
    half = bradley_terry_loss(scores, pairs, torch.tensor([0.5, 0.5]))
    # BCE at target 0.5: -(0.5 log s + 0.5 log(1 - s)), averaged
    s = torch.sigmoid(m)
    assert torch.isclose(half, (-(0.5 * torch.log(s) + 0.5 * torch.log(1 - s))).mean())


def test_gradient_by_hand() -> None:
    """For one pair, L = -log sigmoid(m), m = pi_w - pi_l: dL/dpi_w = -(1 - sigmoid(m)),
    dL/dpi_l = +(1 - sigmoid(m)), and no gradient to the teacher outside the pair."""
    scores = torch.tensor([[0.3, -0.4, 1.2]], requires_grad=True)
    pairs = torch.tensor([[0, 2, 0]])  # teacher 2 beats teacher 0
    bradley_terry_loss(scores, pairs).backward()
    g = 1 - torch.sigmoid(torch.tensor(1.2 - 0.3))
    torch.testing.assert_close(scores.grad, torch.tensor([[g, 0.0, -g]]))


def test_gradient_averages_over_pairs() -> None:
    scores = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    pairs = torch.tensor([[0, 0, 1], [0, 0, 2]])
    bradley_terry_loss(scores, pairs).backward()
    g1 = 1 - torch.sigmoid(torch.tensor(-1.0))  # m = 0 - 1
    g2 = 1 - torch.sigmoid(torch.tensor(1.0))  # m = 0 + 1
    expected = torch.tensor([[-(g1 + g2) / 2, g1 / 2, g2 / 2]])
    torch.testing.assert_close(scores.grad, expected)


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


def test_pair_batches_cover_every_pair_and_score_few_prompts(monkeypatch) -> None:
    """An epoch of pair batches has every pair once. Above `PAIR_BATCH_PROMPTS` prompts the
    pairs come from random groups of that many prompts, so a batch scores at most two
    groups' prompts (an epoch is linear in the calibration size); at or below it, the
    batches are random pairs over all prompts, as they always were."""
    import persyn.router.bradley_terry as bt

    reward = np.random.default_rng(0).uniform(size=(200, 5))
    pairs, targets = training_pairs(reward, 1e-6)
    expected = sorted(map(tuple, pairs.tolist()))
    for group, most_rows in ((16, 32), (1000, 64)):
        monkeypatch.setattr(bt, "PAIR_BATCH_PROMPTS", group)
        epoch = bt._batches_of_pairs(pairs, targets, len(reward), size=64, seed=0)
        for _ in range(2):
            batches = list(epoch())
            seen = [
                (int(b.rows[i]), int(w), int(lo)) for b in batches for i, w, lo in b.pairs.tolist()
            ]
            assert sorted(seen) == expected
            widest = max(len(b.rows) for b in batches)
            assert widest <= most_rows and (group == 16 or widest > 32)
    # One group: the same batches as a plain shuffle of all pairs with the seed.
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))
    first = next(bt._batches_of_pairs(pairs, targets, len(reward), size=64, seed=0)())
    assert torch.equal(first.rows, torch.unique(torch.as_tensor(pairs)[order[:64], 0]))

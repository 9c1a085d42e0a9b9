"""`persyn.method` on small arrays, against values worked out by hand: normalisation within a
prompt, the alpha mix, the oracle, Bradley-Terry pairs, the loss and its gradient, the
batches of the training loop, and the choice of teachers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import persyn.method as method
from persyn.method import (
    any_ordered_pair,
    bradley_terry_loss,
    choose_teachers,
    combine,
    normalize,
    oracle_choice,
    preference_pairs,
    tied_pairs,
    training_pairs,
)

NAN = np.nan


def test_minmax_by_hand() -> None:
    x = np.array([[1.0, 3.0, 2.0], [-4.0, 0.0, -2.0]])
    np.testing.assert_allclose(normalize(x, "minmax"), [[0.0, 1.0, 0.5], [0.0, 1.0, 0.5]])


def test_zscore_by_hand() -> None:
    # mean 2, population std sqrt(2/3)
    x = np.array([[1.0, 3.0, 2.0]])
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(normalize(x, "zscore"), [[-1 / s, 1 / s, 0.0]])


def test_rank_by_hand_with_ties() -> None:
    # ranks 1, 2.5, 2.5, 4 -> (rank - 1) / 3
    x = np.array([[0.1, 0.5, 0.5, 0.9]])
    np.testing.assert_allclose(normalize(x, "rank"), [[0.0, 0.5, 0.5, 1.0]])


@pytest.mark.parametrize(("method", "expected"), [("minmax", 0.5), ("rank", 0.5), ("zscore", 0.0)])
def test_constant_row(method: str, expected: float) -> None:
    out = normalize(np.array([[7.0, 7.0, 7.0], [2.0, NAN, NAN]]), method)
    np.testing.assert_allclose(out[0], [expected] * 3)
    # a single known value is a constant row too; missing stays missing
    assert out[1, 0] == expected and np.isnan(out[1, 1:]).all()


def test_nan_left_out_of_normalisation() -> None:
    out = normalize(np.array([[0.0, NAN, 4.0, 2.0], [NAN, NAN, NAN, NAN]]), "minmax")
    np.testing.assert_allclose(out[0], [0.0, NAN, 1.0, 0.5])
    assert np.isnan(out[1]).all()


def test_zscore_and_rank_leave_a_nan_cell_out() -> None:
    # known cells 1, 3, 2: mean 2, population std sqrt(2/3); ranks 1, 3, 2 -> 0, 1, 0.5
    x = np.array([[1.0, NAN, 3.0, 2.0]])
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(normalize(x, "zscore"), [[-1 / s, NAN, 1 / s, 0.0]])
    np.testing.assert_allclose(normalize(x, "rank"), [[0.0, NAN, 1.0, 0.5]])


def test_unknown_normalisation() -> None:
    with pytest.raises(ValueError, match="normalization must be one of"):
        normalize(np.zeros((1, 2)), "softmax")


def test_combine_by_hand() -> None:
    quality = np.array([[1.0, 0.0, 1.0]])
    learn = np.array([[-2.0, -1.0, -1.5]])  # minmax -> 0, 1, 0.5
    reward = combine(quality, learn, alpha=0.4, method="minmax")
    # (1 - 0.4) * [1, 0, 1] + 0.4 * [0, 1, 0.5]
    np.testing.assert_allclose(reward, [[0.6, 0.4, 0.8]])


@pytest.mark.parametrize(("alpha", "best"), [(0.0, 0), (1.0, 1)])
def test_alpha_extremes(alpha: float, best: int) -> None:
    quality = np.array([[1.0, 0.0]])
    learn = np.array([[-3.0, -1.0]])
    assert oracle_choice(combine(quality, learn, alpha, "minmax"))[0] == best


def test_no_quality_signal_lets_learnability_decide() -> None:
    """A prompt no quality signal applies to (all NaN) has a constant quality row."""
    reward = combine(np.full((1, 3), NAN), np.array([[-3.0, -1.0, -2.0]]), 0.4, "minmax")
    np.testing.assert_allclose(reward, [[0.3, 0.7, 0.5]])


def test_one_missing_score_stays_missing() -> None:
    reward = combine(np.array([[1.0, NAN, 0.0]]), np.array([[-1.0, -1.0, -2.0]]), 0.4, "minmax")
    assert np.isnan(reward[0, 1])
    np.testing.assert_allclose(reward[0, [0, 2]], [1.0, 0.0])


def test_oracle_choice() -> None:
    reward = np.array([[0.2, 0.9, 0.4], [NAN, 0.1, 0.3], [0.5, 0.5, 0.1], [NAN, NAN, NAN]])
    # argmax; NaN never chosen; first on ties; -1 when nothing is known
    assert oracle_choice(reward).tolist() == [1, 2, 0, -1]


def test_preference_pairs_skip_ties_and_missing() -> None:
    reward = np.array([[0.1, 0.5, 0.5, np.nan], [0.9, 0.2, 0.3, 0.3]])
    pairs = {tuple(p) for p in preference_pairs(reward).tolist()}
    # rows are (prompt, winner, loser); (0, 1, 2) and (1, 2, 3) are ties, teacher 3 of
    # prompt 0 has no reward
    assert pairs == {(0, 1, 0), (0, 2, 0), (1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 2, 1), (1, 3, 1)}
    assert {tuple(p) for p in tied_pairs(reward).tolist()} == {(0, 1, 2), (1, 2, 3)}


def test_pairs_in_prompt_then_teacher_pair_order() -> None:
    """The order the training loop's seeded shuffles start from: prompt by prompt, teacher
    pairs (0, 1), (0, 2), (1, 2); ties, when kept, after all ordered pairs."""
    reward = np.array([[0.2, 0.2, 0.9], [0.7, 0.1, 0.4]])
    pairs, targets = training_pairs(reward, 1e-6, "skip")
    assert pairs.tolist() == [[0, 2, 0], [0, 2, 1], [1, 0, 1], [1, 0, 2], [1, 2, 1]]
    assert targets.tolist() == [1.0] * 5
    pairs, targets = training_pairs(reward, 1e-6, "half")
    assert pairs.tolist()[5:] == [[0, 0, 1]] and targets.tolist() == [1.0] * 5 + [0.5]


def test_tie_margin_makes_close_rewards_ties() -> None:
    reward = np.array([[0.50, 0.55, 0.9]])
    assert tied_pairs(reward, tie_margin=0.1).tolist() == [[0, 0, 1]]
    assert preference_pairs(reward, tie_margin=0.1).tolist() == [[0, 2, 0], [0, 2, 1]]


def test_any_ordered_pair() -> None:
    assert any_ordered_pair(np.array([[0.5, 0.5], [0.1, 0.3]]), 1e-6)
    # equal rewards, a single known reward, a difference within the margin: nothing to learn
    assert not any_ordered_pair(np.array([[0.5, 0.5], [0.1, NAN]]), 1e-6)
    assert not any_ordered_pair(np.array([[0.50, 0.55]]), 0.1)


def test_loss_value_of_one_pair() -> None:
    # teacher 1 beats teacher 0 with scores 0 and ln 3: sigmoid(ln 3) = 3/4, loss ln(4/3)
    scores = torch.tensor([[0.0, math.log(3.0)]])
    loss = bradley_terry_loss(scores, torch.tensor([[0, 1, 0]]))
    assert loss.item() == pytest.approx(math.log(4 / 3))
    # as a tie (target 1/2): -(ln 3/4 + ln 1/4) / 2 = ln 4 - ln 3 / 2
    tie = bradley_terry_loss(scores, torch.tensor([[0, 1, 0]]), torch.tensor([0.5]))
    assert tie.item() == pytest.approx(math.log(4) - math.log(3) / 2)


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


def test_pair_batches_cover_every_pair_and_score_few_prompts(monkeypatch) -> None:
    """An epoch of pair batches has every pair once. Above `PAIR_BATCH_PROMPTS` prompts the
    pairs come from random groups of that many prompts, so a batch scores at most two
    groups' prompts (an epoch is linear in the calibration size); at or below it, the
    batches are random pairs over all prompts, as they always were."""
    reward = np.random.default_rng(0).uniform(size=(200, 5))
    pairs, targets = training_pairs(reward, 1e-6)
    expected = sorted(map(tuple, pairs.tolist()))
    for group, most_rows in ((16, 32), (1000, 64)):
        monkeypatch.setattr(method.fit, "PAIR_BATCH_PROMPTS", group)
        epoch = method.fit._batches_of_pairs(pairs, targets, len(reward), size=64, seed=0)
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
    first = next(method.fit._batches_of_pairs(pairs, targets, len(reward), size=64, seed=0)())
    assert torch.equal(first.rows, torch.unique(torch.as_tensor(pairs)[order[:64], 0]))


def test_prompt_batches_hold_all_pairs_of_their_prompts() -> None:
    """By prompts: each batch scores its prompts and all of their pairs (indices local to
    the batch), every prompt once an epoch; a prompt with only ties gives no batch."""
    reward = np.array([[0.1, 0.9], [0.5, 0.5], [0.8, 0.2], [0.3, 0.6]])
    pairs, targets = training_pairs(reward, 1e-6)
    batches = list(method.fit._batches_of_prompts(pairs, targets, len(reward), size=1, seed=0)())
    assert sorted(int(b.rows[0]) for b in batches) == [0, 2, 3]  # prompt 1: a tie only
    for b in batches:
        prompt = int(b.rows[0])
        assert b.pairs.tolist() == [[0, *pairs[pairs[:, 0] == prompt][0, 1:].tolist()]]


def test_choose_teachers_is_the_row_argmax() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, -1.0], [-3.0, -2.0, -1.0]])
    assert choose_teachers(scores).tolist() == [1, 0, 2]  # first on ties


# Issue 23: failures, coherent normalisation, raw ties, the failure charge, oracle ties.


def test_a_failed_answer_loses_to_every_answer_and_two_failures_tie() -> None:
    reward = np.array([[0.2, -np.inf, 0.9, -np.inf]])
    pairs, targets = training_pairs(reward, 1e-6, "half")
    ordered = {tuple(p) for p, t in zip(pairs.tolist(), targets, strict=True) if t == 1}
    assert ordered == {(0, 2, 0), (0, 0, 1), (0, 0, 3), (0, 2, 1), (0, 2, 3)}
    assert tied_pairs(reward).tolist() == [[0, 1, 3]]  # not "teacher 1 beats teacher 3"
    assert any_ordered_pair(np.array([[0.5, -np.inf]]), 1e-6)
    assert not any_ordered_pair(np.array([[-np.inf, -np.inf]]), 1e-6)


def test_mark_failed_keeps_unscored_cells_missing() -> None:
    reward = np.array([[0.4, NAN, NAN]])
    failed = np.array([[False, True, False]])  # teacher 2: unscored, not failed
    marked = method.mark_failed(reward, failed)
    assert marked[0, 1] == -np.inf and np.isnan(marked[0, 2])
    assert training_pairs(marked, 1e-6)[0].tolist() == [[0, 0, 1]]


def test_quality_and_learnability_normalised_over_the_same_teachers() -> None:
    """Teacher 2 has learnability but no quality: it must not squash the others' gap."""
    quality = np.array([[1.0, 1.0, NAN]])
    learn = np.array([[-1.0, -1.1, -5.0]])
    reward = combine(quality, learn, alpha=0.4, method="minmax")
    # quality ties at 0.5; learnability over teachers 0 and 1 only: 1 and 0
    np.testing.assert_allclose(reward[0, :2], [0.6 * 0.5 + 0.4, 0.6 * 0.5])
    alone = combine(quality[:, :2], learn[:, :2], alpha=0.4, method="minmax")
    np.testing.assert_allclose(reward[0, :2], alone[0])
    assert np.isnan(reward[0, 2])


def test_a_learnability_gap_within_the_tie_margin_is_no_preference() -> None:
    quality = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-12]])
    learn = np.array([[-1.0, -1.001], [-1.0, -1.0]])
    reward = combine(quality, learn, alpha=0.4, method="minmax")
    np.testing.assert_allclose(reward, 0.5)  # not 0 vs 1
    assert len(training_pairs(reward, 1e-6)[0]) == 0
    # outside the margin it is a preference; a margin of 0 restores raw min-max
    assert combine(np.ones((1, 2)), np.array([[-1.0, -1.05]]), 0.4, "minmax")[0, 0] == 0.7
    strict = combine(quality[:1], learn[:1], 0.4, "minmax", learnability_margin=0.0)
    np.testing.assert_allclose(strict, [[0.7, 0.3]])


def test_merge_ties_groups_without_chaining() -> None:
    # 0, 0.006, 0.012 within 0.01 steps: one group would chain; groups span at most 0.01
    merged = method.merge_ties(np.array([[0.012, 0.0, 0.006, NAN]]), 0.01)
    np.testing.assert_allclose(merged, [[0.012, 0.003, 0.003, NAN]])


@pytest.mark.parametrize("normalization", ["minmax", "zscore", "rank"])
def test_the_failure_charge_is_the_bottom_of_every_scale(normalization: str) -> None:
    rng = np.random.default_rng(0)
    n = 5
    quality, learn = rng.uniform(size=(200, n)), rng.normal(size=(200, n))
    quality[:10] = 1.0  # prompts whose answers tie on quality
    reward = combine(quality, learn, 0.4, normalization)
    charge = method.failure_reward(normalization, n)
    assert charge <= np.nanmin(reward)
    # the mean of a row (what zscore scores a tie) is above it
    assert charge < 0.0 if normalization == "zscore" else charge == 0.0


def test_oracle_ties_go_to_learnability_then_price_then_order() -> None:
    reward = np.array([[0.8, 0.8, 0.8], [0.8, 0.8, 0.8], [0.8, 0.8, 0.1], [0.3, 0.9, 0.9]])
    learn = np.array([[-2.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [-3.0, NAN, -1.0], [0, -2, -1.0]])
    price = np.array([1.0, 0.5, 0.2])
    # row 0: teachers 1 and 2 likelier, 2 cheaper; row 1: all alike, 2 cheapest;
    # row 2: teacher 2 is not tied, teacher 1 has no learnability; row 3: 2 likelier
    assert oracle_choice(reward, learn, price).tolist() == [2, 2, 0, 2]
    assert oracle_choice(reward, learn).tolist() == [1, 0, 0, 2]  # then list order


def test_fit_without_validation_keeps_the_last_epoch() -> None:
    """Refitting on train + validation runs exactly the chosen epochs: no held-out loss
    may pick an earlier one."""
    from persyn.method import FitSettings, RouterData, fit_bradley_terry

    torch.manual_seed(0)
    x = torch.randn(40, 4)
    reward = np.random.default_rng(0).uniform(size=(40, 3))
    head = torch.nn.Linear(4, 3)
    settings = FitSettings(
        epochs=6,
        learning_rate=0.5,  # large steps: the training loss does not fall every epoch
        batch=8,
        by="pairs",
        weight_decay=0.0,
        patience=None,
        seed=0,
        tie_margin=1e-6,
        ties="skip",
    )
    fit = fit_bradley_terry(head, RouterData(x, reward), settings)
    losses = [h["train_loss"] for h in fit["history"]]
    assert len(losses) == 6 and fit["best_epoch"] == 5
    assert min(losses) < losses[-1]  # an earlier epoch had the lower training loss
    pairs = torch.as_tensor(training_pairs(reward, 1e-6)[0])
    kept = bradley_terry_loss(torch.as_tensor(method.predict(head, x)), pairs)
    assert kept.item() == pytest.approx(losses[-1])

"""Normalisation within a prompt, the alpha mix and the oracle choice, against hand values."""

from __future__ import annotations

import numpy as np
import pytest

from persyn.rewards.mix import combine, normalize, oracle_choice

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

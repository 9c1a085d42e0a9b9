"""Steps 2 to 5 of the method (see `persyn.method`): rewards normalised and mixed within each
prompt, the oracle's teacher, the Bradley-Terry pairs. Arrays are [prompts, teachers]."""

from __future__ import annotations

from typing import Literal

import numpy as np

NORMALIZATIONS = ("minmax", "zscore", "rank")

# Raw differences at or below these count as equal before normalising (`combine`): a
# 0.001-nat learnability gap is noise, and min-max would stretch it to a full 0-vs-1
# preference on a prompt whose answers are otherwise alike. Quality scores are exact
# (0/1 verifiers) or a model's floats, so only rounding is a tie there.
QUALITY_TIE_MARGIN = 1e-9
LEARNABILITY_TIE_MARGIN = 0.01  # nats per token

# 2. Normalise within each prompt


def merge_ties(x: np.ndarray, margin: float) -> np.ndarray:
    """Each row's values within `margin` of each other made equal, before normalising.

    Values are taken in ascending order; a value at most `margin` above the first value of
    the current group joins it (no chaining: a group spans at most `margin`), and every
    member takes the group's mean. NaN stays NaN."""
    x = np.array(x, dtype=float)
    if margin <= 0:
        return x
    for row in x:
        ok = np.flatnonzero(~np.isnan(row))
        order = ok[np.argsort(row[ok], kind="stable")]
        start = 0
        for k in range(1, len(order) + 1):
            if k == len(order) or row[order[k]] - row[order[start]] > margin:
                group = order[start:k]
                row[group] = row[group].mean()
                start = k
    return x


def normalize(x: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Row-wise normalisation; a constant row (or one value) maps to 0.5 (zscore: 0). NaN
    cells are left out and stay NaN.

    - minmax: (x - min) / (max - min), in [0, 1]
    - zscore: (x - mean) / std (population std)
    - rank:   average rank scaled to [0, 1] (ties share a rank)
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")
    x = np.asarray(x, dtype=float)
    out = np.full_like(x, np.nan)
    for i, row in enumerate(x):
        ok = ~np.isnan(row)
        v = row[ok]
        if v.size == 0:
            continue
        spread = v.max() - v.min()
        if spread == 0:
            out[i, ok] = 0.0 if method == "zscore" else 0.5
        elif method == "minmax":
            out[i, ok] = (v - v.min()) / spread
        elif method == "zscore":
            out[i, ok] = (v - v.mean()) / v.std()
        else:
            from scipy.stats import rankdata  # scipy.stats takes a second to import

            out[i, ok] = (rankdata(v) - 1) / (v.size - 1)
    return out


# 3. Mix quality and learnability


def combine(
    quality: np.ndarray,
    learnability: np.ndarray,
    alpha: float,
    method: str,
    quality_margin: float = QUALITY_TIE_MARGIN,
    learnability_margin: float = LEARNABILITY_TIE_MARGIN,
) -> np.ndarray:
    """r = (1 - alpha) * norm(quality) + alpha * norm(learnability).

    Both are normalised over the same teachers of a prompt, those with both scores: a
    teacher with learnability but no quality must not stretch or squash the others'
    learnability scale (its combined reward is missing anyway). Raw values within the
    margins are equal first (`merge_ties`). A prompt no quality signal applies to has a
    constant quality row (so learnability decides); a single missing score stays missing.
    """
    quality = np.array(quality, dtype=float)
    learnability = np.array(learnability, dtype=float)
    quality[np.isnan(quality).all(axis=1)] = 0.0
    both = ~np.isnan(quality) & ~np.isnan(learnability)
    quality[~both] = np.nan
    learnability[~both] = np.nan
    return (1 - alpha) * normalize(merge_ties(quality, quality_margin), method) + alpha * normalize(
        merge_ties(learnability, learnability_margin), method
    )


# Failed answers (an error, an empty answer, one cut off) are marked -inf in a combined
# reward: below every answer of the prompt when pairs are built and the oracle chooses.
# NaN stays "no reward known" (not asked, or a score that could not be computed).


def mark_failed(reward: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """`reward` with the cells of `failed` (a boolean mask) set to -inf."""
    return np.where(failed, -np.inf, reward)


def failure_reward(method: str, n_teachers: int) -> float:
    """What a failed answer is charged where a number is needed (router metrics, mean
    rewards): the bottom of the combined reward's scale, so it is never above an answer.

    minmax and rank: 0, the lowest normalised value. zscore: -sqrt(n - 1), the lowest
    z-score any of n values can have (population std), hence below or equal to every
    answer's normalised reward and to any mix of two of them; the per-prompt minimum would
    be 0 on a prompt where all answers tie, the same as a good answer."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")
    return -float(np.sqrt(max(n_teachers - 1, 0))) if method == "zscore" else 0.0


def charge_failures(reward: np.ndarray, charge: float) -> np.ndarray:
    """`reward` with failed cells (-inf) replaced by `charge`; NaN stays missing."""
    return np.where(np.isneginf(reward), charge, reward)


# 4. The oracle


def oracle_choice(
    reward: np.ndarray,
    learnability: np.ndarray | None = None,
    price: np.ndarray | None = None,
) -> np.ndarray:
    """Index of the best teacher per prompt; -1 where no teacher has a usable answer.

    Ties (rewards within 1e-9) go to the higher raw learnability (the answer the student
    finds likelier), then the lower `price` (per teacher), then the teacher listed first."""
    reward = np.asarray(reward, dtype=float)
    filled = np.where(np.isnan(reward), -np.inf, reward)
    best = filled.max(axis=1, keepdims=True)
    tied = np.isfinite(filled) & (filled >= best - 1e-9)
    learn = np.zeros_like(filled) if learnability is None else np.asarray(learnability, float)
    learn = np.where(np.isnan(learn), -np.inf, learn)
    cost = np.zeros(filled.shape[1]) if price is None else np.asarray(price, dtype=float)
    position = np.broadcast_to(np.arange(filled.shape[1]), filled.shape)
    # np.lexsort: the last key decides first; the winner sorts to the front of its row.
    order = np.lexsort((position, np.broadcast_to(cost, filled.shape), -learn, ~tied), axis=-1)
    choice = order[:, 0] if filled.shape[1] else np.zeros(len(filled), dtype=np.int64)
    choice[~np.isfinite(best[:, 0])] = -1
    return choice


# 5. Bradley-Terry pairs


def preference_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, winner, loser) for every teacher pair whose rewards differ."""
    return _pairs(reward, tie_margin)[0]


def tied_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, a, b) for every teacher pair within `tie_margin` (both rewards known)."""
    return _pairs(reward, tie_margin)[1]


def _pairs(reward: np.ndarray, tie_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Ordered and tied pairs, prompt by prompt and teacher pair (a < b) by pair. A failed
    answer (-inf) loses to every answer; two failed answers tie."""
    reward = np.asarray(reward, dtype=float)
    a, b = np.triu_indices(reward.shape[1], k=1)
    ra, rb = reward[:, a], reward[:, b]
    known = ~np.isnan(ra) & ~np.isnan(rb)
    with np.errstate(invalid="ignore"):  # -inf - -inf is NaN: handled as both failed
        tie = known & ((np.abs(ra - rb) <= tie_margin) | (np.isneginf(ra) & np.isneginf(rb)))
    prompt, pair = np.nonzero(known & ~tie)
    b_wins = rb[prompt, pair] > ra[prompt, pair]
    winner = np.where(b_wins, b[pair], a[pair])
    loser = np.where(b_wins, a[pair], b[pair])
    tie_prompt, tie_pair = np.nonzero(tie)
    return (
        np.stack([prompt, winner, loser], axis=1).astype(np.int64),
        np.stack([tie_prompt, a[tie_pair], b[tie_pair]], axis=1).astype(np.int64),
    )


def training_pairs(
    reward: np.ndarray, tie_margin: float, ties: Literal["skip", "half"] = "skip"
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, targets): ordered pairs with target 1, plus ties with target 0.5 if asked."""
    ordered, tied = _pairs(reward, tie_margin)
    if ties == "skip" or len(tied) == 0:
        return ordered, np.ones(len(ordered), dtype=np.float32)
    targets = np.concatenate([np.ones(len(ordered)), np.full(len(tied), 0.5)]).astype(np.float32)
    return np.concatenate([ordered, tied]), targets


def any_ordered_pair(reward: np.ndarray, tie_margin: float) -> bool:
    """Whether some prompt has two teachers whose rewards differ by more than the tie
    margin (a pair a router can learn an order from), without building the pairs."""
    known = ~np.isnan(reward)
    high = np.where(known, reward, -np.inf).max(axis=1, initial=-np.inf)
    low = np.where(known, reward, np.inf).min(axis=1, initial=np.inf)
    two = known.sum(axis=1) >= 2  # rows with at least one pair
    with np.errstate(invalid="ignore"):  # two failed answers: -inf - -inf, no order
        return bool(np.any((high - low)[two] > tie_margin))

"""Normalise rewards within each prompt across teachers, mix them, pick the oracle.

Arrays are [prompts, teachers]; NaN marks a missing score (an error row), which is left
out of the normalisation and can never be the oracle's choice.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

NORMALIZATIONS = ("minmax", "zscore", "rank")


def normalize(x: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Row-wise normalisation; a constant row (or one value) maps to 0.5 (zscore: 0).

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
            out[i, ok] = (rankdata(v) - 1) / (v.size - 1)
    return out


def combine(quality: np.ndarray, learnability: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """r = (1 - alpha) * norm(quality) + alpha * norm(learnability).

    A prompt no quality signal applies to has a constant quality row (so learnability
    decides); a single missing score stays missing.
    """
    quality = np.array(quality, dtype=float)
    quality[np.isnan(quality).all(axis=1)] = 0.0
    return (1 - alpha) * normalize(quality, method) + alpha * normalize(learnability, method)


def oracle_choice(reward: np.ndarray) -> np.ndarray:
    """Index of the best teacher per prompt (first on ties); -1 where no score exists."""
    filled = np.where(np.isnan(reward), -np.inf, reward)
    choice = filled.argmax(axis=1)
    choice[np.isneginf(filled.max(axis=1))] = -1
    return choice

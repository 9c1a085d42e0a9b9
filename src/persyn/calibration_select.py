"""Which prompts every teacher answers (the calibration set).

The paper draws them at random. Beyond it:
- `kcenter`: greedy farthest-first traversal on prompt embeddings (the 2-approximation of
  the k-center problem): every prompt ends up close to a calibration prompt, so rare kinds
  of prompt are represented instead of being drowned out by frequent ones.
- `uncertainty` (active learning, for a second round): given a router trained on a first
  calibration set, the prompts where its two best teachers are closest in score.

When the prompts file changes under a finished run, `random` carries the previous
calibration prompts over as far as a uniform draw allows (`carry_over_selection`): a fresh
draw would replace most of them, and every teacher would answer the replacements again.
"""

from __future__ import annotations

import random

import numpy as np

from persyn.config import CalibrationConfig


def random_selection(n_items: int, size: int, seed: int) -> list[int]:
    """`size` distinct indices drawn uniformly (Python's `random`, as prepare always did)."""
    return random.Random(seed).sample(range(n_items), min(size, n_items))


def kcenter_selection(embeddings: np.ndarray, size: int, seed: int) -> list[int]:
    """Greedy k-center: start at a seeded random point, then add the farthest point each time.

    `embeddings` [items, dim] should be L2-normalised (distance = 2 - 2 cosine).
    """
    n = len(embeddings)
    size = min(size, n)
    if size == 0:
        return []
    chosen = [random.Random(seed).randrange(n)]
    # Squared distance of every item to its nearest chosen centre, updated per new centre.
    nearest = np.full(n, np.inf)
    sq_norms = np.einsum("ij,ij->i", embeddings, embeddings)
    for _ in range(size - 1):
        centre = embeddings[chosen[-1]]
        dist = sq_norms - 2 * embeddings @ centre + centre @ centre
        nearest = np.minimum(nearest, dist)
        nearest[chosen[-1]] = -np.inf  # never pick a centre twice
        chosen.append(int(np.argmax(nearest)))
    return chosen


def uncertainty_selection(
    scores: np.ndarray, size: int, exclude: set[int] | None = None
) -> list[int]:
    """Indices of the `size` rows whose two best teachers are closest in score."""
    top2 = -np.sort(-scores, axis=1)[:, :2]
    margin = top2[:, 0] - top2[:, 1]
    order = [int(i) for i in np.argsort(margin, kind="stable") if int(i) not in (exclude or set())]
    return order[:size]


def carry_over_selection(
    previous: list[str], previous_ids: list[str], ids: list[str], size: int, seed: int
) -> list[str]:
    """A uniform random draw of `size` of `ids` that keeps as many of `previous` (a uniform
    draw from `previous_ids`, the prompts before the file was edited) as a uniform draw
    allows, so their answers are reused. Appending prompts to the file: the number of
    calibration slots that go to new prompts follows the hypergeometric law (as in a fresh
    draw), each new slot is a uniform pick among the new prompts, each old slot is kept
    from `previous` (a uniform subset of a uniform subset is uniform), topped up uniformly
    from the other old prompts when deleted ones left too few."""
    rng = np.random.default_rng(seed)
    known = set(previous_ids)
    old = [i for i in ids if i in known]
    new = [i for i in ids if i not in known]
    k = min(size, len(ids))
    n_new = int(rng.hypergeometric(len(new), len(old), k)) if new and old else len(new[:k])
    old_set = set(old)
    kept = [i for i in previous if i in old_set]
    if len(kept) >= k - n_new:
        picked = [kept[j] for j in rng.permutation(len(kept))[: k - n_new]]
    else:
        rest = [i for i in old if i not in set(kept)]
        picked = kept + [rest[j] for j in rng.permutation(len(rest))[: k - n_new - len(kept)]]
    picked += [new[j] for j in rng.permutation(len(new))[:n_new]]
    return sorted(picked)


def select_calibration(cfg: CalibrationConfig, ids: list[str], texts: list[str]) -> list[str]:
    """The calibration prompt ids, sorted, by `cfg.strategy`."""
    if cfg.strategy == "kcenter":
        from persyn.router.encoder import PromptEncoder

        embeddings = PromptEncoder(cfg.embedding_model).encode(texts)
        picked = kcenter_selection(embeddings, cfg.size, cfg.seed)
    else:
        picked = random_selection(len(ids), cfg.size, cfg.seed)
    return sorted(ids[i] for i in picked)

"""How well the calibration set covers a routed prompt: its novelty and the router's
confidence, over arrays (no models, no files).

- `novelty`: the mean cosine distance (1 - cosine similarity) from a prompt's embedding to
  its k nearest reference (calibration) embeddings; 0 for a prompt among the references,
  up to 2 for one opposite to all of them. Higher is less like the calibration prompts.
- `novelty_threshold`: a high quantile of the novelty of held-out calibration prompts
  (not in the reference set) relative to the reference: the novelty an unseen prompt of
  the calibration distribution stays below with that probability.
- `confidence`: the Bradley-Terry probability that the router's top-1 teacher beats its
  runner-up, sigmoid(pi_top1 - pi_top2), in [0.5, 1] (one teacher: 1).
- `select_uncovered` orders the uncovered prompts (most novel, then least confident) and
  `representative` spreads a round's picks over the encoder space: the most novel prompts
  all sit in one unseen region, so picking by novelty alone calibrated one region a round.
- `neighbour_vote`: the teacher of highest reward on a prompt's nearest scored
  (calibration and added) prompts, the nearest weighing most: a kernel estimate of the
  prompt's rewards, less `caution` times their spread (a teacher right on some
  neighbours and far below on others is a gamble on this prompt).
- `vote_width`: under `routing.vote_width: auto`, the kernel width of that vote chosen by
  leave-one-out on scored prompts (`vote_width_loss`: the reward each width's vote loses
  against the prompt's best; active calibration holds out its added prompts). Not the
  default: resting on the ten or so prompts a round adds, it did worse on bench_coverage's
  fresh seeds than the pinned 0.05.
- `keep_covered`: after a round, prompts the first router covered keep its teacher (the
  retrained router learnt nothing new about them), the others take the vote's;
  `near_any` tells which uncovered prompts have an added prompt among their nearest
  calibration prompts (those far from every added one learnt nothing new either).
"""

from __future__ import annotations

import numpy as np


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


def novelty(query_emb: np.ndarray, reference_emb: np.ndarray, k: int) -> np.ndarray:
    """[queries] mean cosine distance of each query [queries, dim] to its `k` nearest
    references [references, dim] (all of them when fewer); NaN for every query when there
    is no reference."""
    if len(query_emb) == 0 or len(reference_emb) == 0:
        return np.full(len(query_emb), np.nan)
    k = max(1, min(k, len(reference_emb)))
    similarity = _unit(query_emb) @ _unit(reference_emb).T
    nearest = -np.partition(-similarity, k - 1, axis=1)[:, :k]  # the k largest, any order
    return np.clip(1.0 - nearest.mean(axis=1), 0.0, 2.0).astype(float)


def novelty_threshold(heldout_novelty: np.ndarray, quantile: float) -> float | None:
    """The `quantile` of the held-out prompts' novelty (None without any)."""
    values = np.asarray(heldout_novelty, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.quantile(values, quantile)) if len(values) else None


def confidence(scores: np.ndarray) -> np.ndarray:
    """[prompts] sigmoid(top-1 score - runner-up score) of scores [prompts, teachers]."""
    scores = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    if scores.shape[1] < 2:
        return np.ones(len(scores))
    top2 = -np.partition(-scores, 1, axis=1)[:, :2]
    margin = np.nan_to_num(top2[:, 0] - top2[:, 1], nan=0.0, posinf=50.0)
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -50.0, 50.0)))


def uncovered(
    novelty_values: np.ndarray,
    threshold: float | None,
    confidence_values: np.ndarray,
    min_confidence: float | None,
) -> np.ndarray:
    """[prompts] whether the calibration set does not cover a prompt: its novelty above
    `threshold`, or its confidence below `min_confidence` (each test off when None; a NaN
    novelty, from a router without an encoder space, is never above)."""
    novel = np.asarray(novelty_values, dtype=float)
    out = np.zeros(len(novel), dtype=bool)
    if threshold is not None:
        out |= np.nan_to_num(novel, nan=-np.inf) > threshold
    if min_confidence is not None:
        out |= np.asarray(confidence_values, dtype=float) < min_confidence
    return out


def active_prompt_budget(budget: float, routed: int, teachers: int) -> int:
    """How many routed prompts active calibration may add: each costs `teachers - 1` extra
    generations (every teacher answers it instead of one), and the extra generations stay
    within `budget` x `routed`."""
    return int(np.floor(budget * routed / max(teachers - 1, 1) + 1e-9))


def select_uncovered(
    novelty_values: np.ndarray,
    threshold: float | None,
    confidence_values: np.ndarray,
    min_confidence: float | None,
    capacity: int,
) -> np.ndarray:
    """Indices of up to `capacity` uncovered prompts (`uncovered`) to calibrate, most novel
    first, then least confident (a NaN novelty counts as least novel); ties by index."""
    mask = uncovered(novelty_values, threshold, confidence_values, min_confidence)
    candidates = np.flatnonzero(mask)
    if capacity <= 0 or not len(candidates):
        return np.zeros(0, dtype=int)
    novel = np.nan_to_num(np.asarray(novelty_values, dtype=float)[candidates], nan=-np.inf)
    sure = np.asarray(confidence_values, dtype=float)[candidates]
    order = np.lexsort((candidates, sure, -novel))  # last key first: novelty, then confidence
    return candidates[order[:capacity]]


# `representative` compares every pair of the prompts it chooses among: above this many,
# it chooses among an even stride of them (`n^2` similarities, 64 MiB at float32).
REPRESENTATIVE_POOL = 4096


def representative(points: np.ndarray, seeds: np.ndarray, capacity: int) -> np.ndarray:
    """Indices of up to `capacity` rows of `points` [points, dim] that bring the points,
    in total, closest to the `seeds` [seeds, dim] (the calibration prompts) or a pick:
    the greedy facility-location choice, each pick the point that most raises the sum
    over the points of their highest cosine similarity. A region of many points far from
    every seed is picked first, and each region gets picks by its size and spread (a
    farthest-point choice gave most picks to the most spread-out region and few to a
    tight one). Ties go to the lower index (`points` in priority order break them). Over
    `REPRESENTATIVE_POOL` points, the choice is among an even stride of them."""
    if capacity <= 0 or not len(points):
        return np.zeros(0, dtype=int)
    pool = np.arange(0, len(points), -(-len(points) // REPRESENTATIVE_POOL))
    unit = _unit(points[pool])
    similarity = unit @ unit.T
    best = np.full(len(unit), -1.0, dtype=np.float32)
    if len(seeds):
        best = (unit @ _unit(seeds).T).max(axis=1)
    picked: list[int] = []
    for _ in range(min(capacity, len(unit))):
        gain = np.maximum(similarity - best[None, :], 0.0).sum(axis=1)
        gain[picked] = -1.0  # a picked point is never picked again
        i = int(np.argmax(gain))
        picked.append(i)
        best = np.maximum(best, similarity[i])
    return pool[picked]


# The widths `vote_width` chooses among, in cosine distance: with weights exp(-distance /
# width), a neighbour `width` farther than another counts e^-1 as much. From 0.02 (the
# nearest one or two decide) to 0.5 (nearly an unweighted vote of the k nearest); weights
# linear in similarity were tried before and let many far calibration prompts of another
# family outvote the few near ones of the prompt's own (bench_coverage, bench/RESULTS.md).
VOTE_WIDTHS = (0.02, 0.05, 0.1, 0.2, 0.5)

# Query rows per block when every scored prompt votes on every other (`vote_width_loss`):
# a block's similarities are `block x prompts`, never the whole square.
_LOO_BLOCK = 1024


def neighbour_vote(
    query_emb: np.ndarray,
    reference_emb: np.ndarray,
    reference_reward: np.ndarray,
    k: int,
    width: float,
    able: np.ndarray | None = None,
    caution: float = 0.0,
) -> np.ndarray:
    """[queries] the teacher of highest estimated reward for each query [queries, dim]:
    each teacher's reward averaged over the query's `k` nearest references [references,
    dim] (`reference_reward` [references, teachers]; NaN: no answer, left out of that
    teacher's mean), each weighted by exp(-cosine distance / `width`) (none at or beyond
    90 degrees): a kernel estimate of the query's rewards, less `caution` times the
    weighted standard deviation of those rewards. `able` [teachers] bool: the teachers it
    may choose (default every one). Ties go to the lower index; -1 for a query no
    reference weighs on.

    Why the rewards and not a count of the neighbours' best teachers (the vote before):
    on a few added prompts of an unseen region, a teacher that is best on most of them
    can be far below on the rest, and the mean reward weighs by how much each teacher
    loses, not how often it wins (bench_coverage: unseen prompts far below the oracle 58
    of 720 against 73 with the count vote on seeds 0-5, where this was found, and 21 of
    360 against 25 on fresh seeds 6-8; bench/RESULTS.md).

    Why the spread: the few added prompts of an unseen family can mix kinds whose best
    teacher differs (one-step problems one teacher gets right, longer ones it gets
    wrong), and the encoder barely tells them apart; a teacher whose reward swings across
    them is a gamble on the prompt in between, a steady one is not (bench_coverage, unseen
    prompts far below the oracle with caution 0.5 against 0: 194 against 210 of 2880 on
    seeds 0-23, where it was tried, and 52 against 53 of 720 on seeds 24-29, drawn after;
    bench/RESULTS.md)."""
    if not len(query_emb) or not len(reference_emb):
        return np.full(len(query_emb), -1)
    similarity = _unit(query_emb) @ _unit(reference_emb).T
    reward = np.asarray(reference_reward, dtype=float)
    return _vote(similarity, reward, k, width, able, caution)


def _vote(
    similarity: np.ndarray,
    reward: np.ndarray,
    k: int,
    width: float,
    able: np.ndarray | None,
    caution: float,
) -> np.ndarray:
    """`neighbour_vote` from the queries' cosine similarity to the references [queries,
    references]. A similarity of -inf (a query's own row, left out, or a reference with
    no answer at all) is never among the nearest while k is below the references' count,
    and weighs nothing."""
    answered = np.isfinite(reward).any(axis=1)  # a prompt with no answer takes no slot
    similarity = np.where(answered[None, :], similarity, -np.inf)
    k = max(1, min(k, similarity.shape[1]))
    rows = np.arange(len(similarity))[:, None]
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    near = similarity[rows, nearest].astype(float)
    weight = np.where(near > 0, np.exp((np.maximum(near, 0.0) - 1.0) / width), 0.0)
    known = np.isfinite(reward[nearest])  # [queries, k, teachers]
    values = np.where(known, reward[nearest], 0.0)
    mass = np.einsum("qk,qkt->qt", weight, known)
    norm = np.where(mass > 0, mass, 1.0)
    mean = np.einsum("qk,qkt->qt", weight, values) / norm
    spread = np.einsum("qk,qkt->qt", weight, known * (values - mean[:, None, :]) ** 2) / norm
    estimate = np.where(mass > 0, mean - caution * np.sqrt(spread), -np.inf)
    if able is not None:
        estimate[:, ~np.asarray(able, dtype=bool)] = -np.inf
    voted = np.isfinite(estimate).any(axis=1)
    return np.where(voted, estimate.argmax(axis=1), -1)


def vote_width_loss(
    embeddings: np.ndarray,
    reward: np.ndarray,
    k: int,
    held_out: np.ndarray,
    widths: tuple[float, ...] = VOTE_WIDTHS,
    able: np.ndarray | None = None,
    caution: float = 0.0,
) -> np.ndarray:
    """[widths] the mean reward the neighbour vote loses on the `held_out` scored prompts
    ([prompts] bool), each left out in turn: every scored prompt [prompts, dim] votes with
    its rewards (`reward` [prompts, teachers], failed answers charged, NaN: no answer);
    per held-out prompt, the vote of its `k` nearest others at that width (and
    `caution`), and the prompt's best reward (among `able`) minus its reward of the
    teacher voted for. A held-out prompt that no other prompt weighs on (every one at 90
    degrees or more, the same at every width) or whose reward of the teacher voted for is
    unknown counts at no width; NaN for every width when none is left.

    Why: the width that serves the re-routed prompts cannot be measured on them (their
    oracle is what active calibration avoids paying for), but a scored prompt of their
    region has known rewards and neighbours that vote as theirs do. Active calibration
    holds out the added prompts, the scored prompts of the uncovered regions the vote
    serves; held out, the calibration prompts (the covered distribution, where the first
    router decides) chose the widest width, a near-majority that let far calibration
    prompts outvote the few near added ones (bench_coverage seed 0, with the count vote:
    unseen prompts far below the oracle 15.8% at 0.5, 5.8% at 0.05)."""
    reward = np.asarray(reward, dtype=float)
    queries = np.flatnonzero(np.asarray(held_out, dtype=bool))
    if len(reward) < 2 or not len(queries):
        return np.full(len(widths), np.nan)
    columns = np.ones(reward.shape[1], dtype=bool) if able is None else np.asarray(able, bool)
    best = np.nanmax(np.where(columns, reward, np.nan), axis=1, initial=-np.inf)
    unit = _unit(np.asarray(embeddings))
    loss = np.full((len(widths), len(queries)), np.nan)
    for start in range(0, len(queries), _LOO_BLOCK):
        rows = np.arange(start, min(start + _LOO_BLOCK, len(queries)))
        own = queries[rows]
        similarity = (unit[own] @ unit.T).astype(float)
        similarity[np.arange(len(rows)), own] = -np.inf  # not its own voter
        for w, width in enumerate(widths):
            choice = _vote(similarity, reward, min(k, len(reward) - 1), width, columns, caution)
            picked = reward[own, np.maximum(choice, 0)]
            loss[w, rows] = np.where(choice >= 0, best[own] - picked, np.nan)
    counted = np.isfinite(loss).all(axis=0)
    if not counted.any():
        return np.full(len(widths), np.nan)
    return loss[:, counted].mean(axis=1)


def vote_width(losses: np.ndarray, widths: tuple[float, ...] = VOTE_WIDTHS) -> float | None:
    """The width of least leave-one-out loss (`vote_width_loss`); equal losses (within
    1e-9) go to the narrower width: a round's loss rests on the few prompts it added, so
    ties are common and say nothing, and the narrow vote lets those added prompts, the
    region's only oracle evidence, outvote the many farther calibration prompts (ties to
    the wider width chose 0.2 or 0.5 in 8 of 12 rounds on bench_coverage's held-out seeds 1
    and 2, 6 of them by a tie, and did worse than 0.05 there). None when no loss is known."""
    losses = np.asarray(losses, dtype=float)
    if not np.isfinite(losses).any():
        return None
    least = np.nanmin(losses)
    return float(min(w for w, v in zip(widths, losses, strict=True) if v <= least + 1e-9))


def near_any(
    query_emb: np.ndarray, reference_emb: np.ndarray, flagged: np.ndarray, k: int
) -> np.ndarray:
    """[queries] whether any of a query's `k` nearest references [references, dim] (by
    cosine similarity) is `flagged` ([references] bool)."""
    flagged = np.asarray(flagged, dtype=bool)
    if not len(query_emb) or not flagged.any():
        return np.zeros(len(query_emb), dtype=bool)
    k = max(1, min(k, len(reference_emb)))
    similarity = _unit(query_emb) @ _unit(reference_emb).T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    return flagged[nearest].any(axis=1)


def keep_covered(
    first_choice: np.ndarray, first_uncovered: np.ndarray, new_choice: np.ndarray
) -> np.ndarray:
    """[prompts] the teacher after active calibration: the first router's (`first_choice`)
    where it covered the prompt, the retrained router's (`new_choice`) where it did not."""
    return np.where(np.asarray(first_uncovered, dtype=bool), new_choice, first_choice)

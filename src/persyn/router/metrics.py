"""How well a routing choice does against the oracle on prompts with known rewards."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from persyn.method import choose_teachers

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_CHUNK = 100  # resamples drawn at once: [chunk, prompts] indices stay small


def _charged(reward: np.ndarray, failure_reward: float) -> np.ndarray:
    """Rewards with failed (-inf) and unscored (NaN) cells charged `failure_reward`: a
    dataset built from such a choice would lose the row, or have one nobody could score."""
    return np.where(np.isfinite(reward), reward, failure_reward)


def best_fixed_teacher(
    reward: np.ndarray, failure_reward: float, teachers: Sequence[int] | None = None
) -> int:
    """The teacher (column) with the best mean charged reward, among `teachers` (default:
    all): chosen on the training split, then measured on the others like the router."""
    columns = np.arange(reward.shape[1]) if teachers is None else np.asarray(teachers)
    mean = _charged(reward[:, columns], failure_reward).mean(axis=0)
    return int(columns[int(np.argmax(mean))])


def mean_interval(
    values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """A 95% percentile bootstrap interval of the mean of `values` (one per prompt),
    seeded: a rerun gives the same interval."""
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            values[
                rng.integers(0, len(values), size=(min(BOOTSTRAP_CHUNK, left), len(values)))
            ].mean(axis=1)
            for left in range(resamples, 0, -BOOTSTRAP_CHUNK)
        ]
    )
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def routing_metrics(
    scores: np.ndarray,
    reward: np.ndarray,
    *,
    fixed_teacher: int,
    failure_reward: float,
    teachers: Sequence[int] | None = None,
) -> dict[str, float]:
    """Compare router scores with rewards, both [prompts, teachers] (NaN: no score; -inf:
    the teacher's answer failed), over the columns `teachers` (default: all; teachers that
    cannot generate are left out by the caller, as `route` leaves them out).

    Prompts where no teacher has a reward say nothing about routing: they are left out and
    counted (`prompts_without_reward`). On the others, every choice (router, fixed teacher,
    random) is charged the real reward of the teacher it picks, `failure_reward` (the
    bottom of the normalisation's scale, `persyn.method.failure_reward`) for a teacher
    that failed or has no score:

    - top1: share of prompts where the router's choice is an oracle-best teacher
    - hit3: share where an oracle-best teacher is in the router's top 3
    - pairwise_accuracy: share of reward-ordered pairs the router orders the same way (a
      failed answer is below every answer, as in training)
    - regret: mean (oracle reward - routed reward)
    - reward: mean reward of the routed choice; random_reward, and best_fixed_reward of
      `fixed_teacher` (a column index chosen on the training split: `best_fixed_teacher`)
    - routed_to_failed: share of prompts routed to a teacher that failed or has no score
    - captured: (router - random) / (oracle - random)
    - margin: mean (routed reward - best fixed teacher's reward), prompt by prompt, and
      margin_low / margin_high its 95% bootstrap interval over the prompts: whether the
      router beats the best single teacher, or the prompts are too few to tell
    """
    columns = np.arange(reward.shape[1]) if teachers is None else np.asarray(teachers)
    if fixed_teacher not in columns:
        raise ValueError(f"fixed_teacher {fixed_teacher} is not among the teachers {columns}")
    fixed_column = int(np.flatnonzero(columns == fixed_teacher)[0])
    scores, reward = scores[:, columns], reward[:, columns]
    known = np.isfinite(reward).any(axis=1)
    without = float((~known).sum())
    if not known.any():
        return {"prompts": 0.0, "prompts_without_reward": without}
    scores, reward = scores[known], reward[known]
    charged = _charged(reward, failure_reward)
    best = charged.max(axis=1)
    choice = choose_teachers(scores)
    rows = np.arange(len(reward))
    routed = charged[rows, choice]
    top3 = np.argsort(-scores, axis=1)[:, :3]
    agree = total = 0
    n_t = reward.shape[1]
    for a in range(n_t):
        for b in range(a + 1, n_t):
            ok = ~np.isnan(reward[:, a]) & ~np.isnan(reward[:, b]) & (reward[:, a] != reward[:, b])
            agree += int(((reward[ok, a] > reward[ok, b]) == (scores[ok, a] > scores[ok, b])).sum())
            total += int(ok.sum())
    random_reward = float(charged.mean())
    oracle, router = float(best.mean()), float(routed.mean())
    margin = routed - charged[:, fixed_column]
    margin_low, margin_high = mean_interval(margin)
    return {
        "prompts": float(len(reward)),
        "prompts_without_reward": without,
        "top1": float(np.mean(routed >= best)),
        "hit3": float((charged[rows[:, None], top3] >= best[:, None]).any(axis=1).mean()),
        "pairwise_accuracy": agree / total if total else float("nan"),
        "regret": float(np.mean(best - routed)),
        "reward": router,
        "routed_to_failed": float((~np.isfinite(reward[rows, choice])).mean()),
        "oracle_reward": oracle,
        "best_fixed_reward": float(charged[:, fixed_column].mean()),
        "best_fixed_teacher": fixed_teacher,
        "random_reward": random_reward,
        "margin": float(margin.mean()),
        "margin_low": margin_low,
        "margin_high": margin_high,
        "captured": (router - random_reward) / (oracle - random_reward)
        if oracle > random_reward
        else float("nan"),
    }

"""How well a routing choice does against the oracle on prompts with known rewards."""

from __future__ import annotations

import numpy as np


def routing_metrics(scores: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """Compare router scores with rewards, both [prompts, teachers] (NaN = missing reward).

    - top1: share of prompts where the router's choice is an oracle-best teacher
    - hit3: share where an oracle-best teacher is in the router's top 3
    - pairwise_accuracy: share of reward-ordered pairs the router orders the same way
    - regret: mean (oracle reward - routed reward)
    - reward: mean reward of the routed choice; best_fixed_reward, random_reward alongside
    - captured: (router - random) / (oracle - random)
    """
    filled = np.where(np.isnan(reward), -np.inf, reward)
    best = filled.max(axis=1)
    scores = np.where(np.isnan(reward), -np.inf, scores)  # never route to a failed teacher
    choice = scores.argmax(axis=1)
    rows = np.arange(len(reward))
    routed = filled[rows, choice]
    top3 = np.argsort(-scores, axis=1)[:, :3]
    hit3 = np.mean([(filled[i, top3[i]] >= best[i]).any() for i in rows])
    agree = total = 0
    n_t = reward.shape[1]
    for a in range(n_t):
        for b in range(a + 1, n_t):
            ok = ~np.isnan(reward[:, a]) & ~np.isnan(reward[:, b]) & (reward[:, a] != reward[:, b])
            agree += int(((reward[ok, a] > reward[ok, b]) == (scores[ok, a] > scores[ok, b])).sum())
            total += int(ok.sum())
    random_reward = float(np.nanmean(reward, axis=1).mean())
    fixed = np.nanmean(reward, axis=0)
    oracle = float(best.mean())
    router = float(routed.mean())
    return {
        "prompts": float(len(reward)),
        "top1": float(np.mean(routed >= best)),
        "hit3": float(hit3),
        "pairwise_accuracy": agree / total if total else float("nan"),
        "regret": float(np.mean(best - routed)),
        "reward": router,
        "oracle_reward": oracle,
        "best_fixed_reward": float(np.nanmax(fixed)),
        "best_fixed_teacher": int(np.nanargmax(fixed)),
        "random_reward": random_reward,
        "captured": (router - random_reward) / (oracle - random_reward)
        if oracle > random_reward
        else float("nan"),
    }

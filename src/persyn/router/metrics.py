"""How well a routing choice does against the oracle on prompts with known rewards."""

from __future__ import annotations

import numpy as np

from persyn.method import choose_teachers

# What a failed response earns: the bottom of the combined reward's scale (rewards are
# normalised within the prompt to [0, 1]). A router that picks a teacher whose answer
# failed is charged this, as a dataset built from its choice would lose the row.
FAILED_REWARD = 0.0


def routing_metrics(scores: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """Compare router scores with rewards, both [prompts, teachers] (NaN = the teacher's
    response failed or could not be scored).

    Prompts where no teacher has a reward say nothing about routing: they are left out and
    counted (`prompts_without_reward`). On the others, every choice (router, fixed teacher,
    random) is charged the real reward of the teacher it picks, `FAILED_REWARD` for a
    teacher that failed:

    - top1: share of prompts where the router's choice is an oracle-best teacher
    - hit3: share where an oracle-best teacher is in the router's top 3
    - pairwise_accuracy: share of reward-ordered pairs the router orders the same way
    - regret: mean (oracle reward - routed reward)
    - reward: mean reward of the routed choice; best_fixed_reward, random_reward alongside
    - routed_to_failed: share of prompts routed to a teacher that failed
    - captured: (router - random) / (oracle - random)
    """
    known = ~np.isnan(reward).all(axis=1)
    without = float((~known).sum())
    if not known.any():
        return {"prompts": 0.0, "prompts_without_reward": without}
    scores, reward = scores[known], reward[known]
    charged = np.where(np.isnan(reward), FAILED_REWARD, reward)
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
    fixed = charged.mean(axis=0)
    random_reward = float(charged.mean())
    oracle, router = float(best.mean()), float(routed.mean())
    return {
        "prompts": float(len(reward)),
        "prompts_without_reward": without,
        "top1": float(np.mean(routed >= best)),
        "hit3": float((charged[rows[:, None], top3] >= best[:, None]).any(axis=1).mean()),
        "pairwise_accuracy": agree / total if total else float("nan"),
        "regret": float(np.mean(best - routed)),
        "reward": router,
        "routed_to_failed": float(np.isnan(reward[rows, choice]).mean()),
        "oracle_reward": oracle,
        "best_fixed_reward": float(fixed.max()),
        "best_fixed_teacher": int(fixed.argmax()),
        "random_reward": random_reward,
        "captured": (router - random_reward) / (oracle - random_reward)
        if oracle > random_reward
        else float("nan"),
    }

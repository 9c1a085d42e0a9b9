"""`persyn eval-router`: routers side by side on held-out calibration prompts.

Every router is trained on the router's train split of the calibration set, picks its
best epoch on the validation split and is scored on the test split, which neither step
touched and where every teacher's reward is known: top-1 agreement with the
oracle, Hit@3, pairwise accuracy, mean reward, regret (oracle minus routed reward) and
captured reward ((router - random) / (oracle - random)). Also a learning curve over
calibration size, a comparison of calibration-selection strategies at equal size, and the
reward given up for money saved under budgets (when teachers have prices).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from persyn.calibration_select import kcenter_selection, random_selection, uncertainty_selection
from persyn.config import RouterConfig
from persyn.method import choose_teachers, failure_reward
from persyn.router.encoder import PromptEncoder
from persyn.router.metrics import best_fixed_teacher, routing_metrics
from persyn.router.routers import ROUTERS, make_router
from persyn.stages.common import generating_columns

BASELINES = ("best-fixed", "random", "knn", "mf")
METRIC_COLUMNS = {
    "top1": "top-1",
    "hit3": "Hit@3",
    "pairwise_accuracy": "pairwise acc.",
    "reward": "mean reward",
    "regret": "regret",
    "captured": "captured",
}


@dataclass
class HeldOut:
    """Calibration prompts with every teacher's reward (-inf: a failed answer), split by
    prompt: `train` fits, `val` picks the epoch (may be empty), `test` measures, over the
    teachers that can generate (`columns`; default all), a failed answer charged
    `failure_reward`."""

    teachers: list[str]
    train_texts: list[str]
    train_reward: np.ndarray
    val_texts: list[str]
    val_reward: np.ndarray
    test_texts: list[str]
    test_reward: np.ndarray
    failure_reward: float = 0.0
    columns: list[int] | None = None

    def metrics(self, scores: np.ndarray) -> dict[str, float]:
        """Test-split metrics of `scores`, against the teacher best on the train split."""
        fixed = best_fixed_teacher(self.train_reward, self.failure_reward, self.columns)
        return routing_metrics(
            scores,
            self.test_reward,
            fixed_teacher=fixed,
            failure_reward=self.failure_reward,
            teachers=self.columns,
        )

    def subset(self, rows: list[int]) -> HeldOut:
        """The same validation and test splits with only `rows` of the training split."""
        return replace(
            self,
            train_texts=[self.train_texts[i] for i in rows],
            train_reward=self.train_reward[rows],
        )


def held_out_from_run(run: Any) -> HeldOut:
    """The router's train/val/test split of a run whose `score` stage is done."""
    split = run.store.split()
    if not split.router_test:
        raise ValueError("router.test_fraction is 0: no test calibration prompts to evaluate on")
    by_id = run.prompts_by_id()
    rewards = run.store.rewards()
    parts = [
        rewards.subset(ids) for ids in (split.router_train, split.router_val, split.router_test)
    ]
    cfg = run.cfg
    return HeldOut(
        cfg.teacher_names,
        *(x for part in parts for x in ([by_id[i].text for i in part.ids], part.routing_reward)),
        failure_reward=failure_reward(cfg.rewards.normalization, len(cfg.teachers)),
        columns=generating_columns(cfg) or None,
    )


def fit_and_score(
    data: HeldOut, cfg: RouterConfig, encoder: PromptEncoder | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """Train `cfg.kind` on the train split (best epoch by the validation split); (test
    metrics, test scores)."""
    router = make_router(cfg, data.teachers, encoder)
    router.fit(
        data.train_texts,
        data.train_reward,
        data.val_texts or None,
        data.val_reward if data.val_texts else None,
        failure_reward=data.failure_reward,
    )
    scores = router.scores(data.test_texts)
    return data.metrics(scores), scores


def compare_routers(
    data: HeldOut, cfg: RouterConfig, kinds: list[str], encoder: PromptEncoder | None = None
) -> dict[str, dict[str, float]]:
    """Test-split metrics per router kind, plus the oracle's."""
    for kind in kinds:
        ROUTERS.check(kind, "routers")
    results = {
        kind: fit_and_score(data, cfg.model_copy(update={"kind": kind}), encoder)[0]
        for kind in kinds
    }
    oracle_scores = np.where(np.isnan(data.test_reward), -np.inf, data.test_reward)
    results["oracle"] = data.metrics(oracle_scores)
    return results


def learning_curve(
    data: HeldOut,
    cfg: RouterConfig,
    sizes: list[int],
    repeats: int = 3,
    encoder: PromptEncoder | None = None,
) -> list[dict[str, float]]:
    """Test-split metrics of `cfg.kind` trained on random subsets of each size (mean of
    `repeats` draws; the full training split is drawn once)."""
    n_train = len(data.train_texts)
    rows = []
    for size in sorted({min(s, n_train) for s in sizes if s >= 2}):
        draws = 1 if size == n_train else repeats
        metrics = [
            fit_and_score(data.subset(random_selection(n_train, size, seed)), cfg, encoder)[0]
            for seed in range(draws)
        ]
        rows.append({"calibration_prompts": size, **_mean(metrics)})
    return rows


def compare_selection(
    data: HeldOut,
    cfg: RouterConfig,
    sizes: list[int],
    repeats: int = 3,
    encoder: PromptEncoder | None = None,
) -> list[dict[str, Any]]:
    """Calibration prompts chosen from the train split by random, k-center or uncertainty
    selection, at equal sizes; test-split metrics of `cfg.kind` (mean over seeds).

    Uncertainty is a second round: half the prompts at random, a router trained on them,
    then the prompts whose two best teachers it scores closest."""
    encoder = encoder or PromptEncoder(cfg.backbone, cfg.embed_batch_size)
    embeddings = encoder.encode(data.train_texts)
    n_train = len(data.train_texts)

    def uncertainty(size: int, seed: int) -> list[int]:
        first = random_selection(n_train, size // 2, seed)
        router = make_router(cfg, data.teachers, encoder)
        sub = data.subset(first)
        router.fit(sub.train_texts, sub.train_reward, failure_reward=data.failure_reward)
        scores = router.scores(data.train_texts)
        return first + uncertainty_selection(scores, size - len(first), exclude=set(first))

    strategies = {
        "random": lambda size, seed: random_selection(n_train, size, seed),
        "kcenter": lambda size, seed: kcenter_selection(embeddings, size, seed),
        "uncertainty": uncertainty,
    }
    rows = []
    for size in sorted({min(s, n_train) for s in sizes if s >= 4}):
        for name, select in strategies.items():
            metrics = [
                fit_and_score(data.subset(select(size, seed)), cfg, encoder)[0]
                for seed in range(repeats)
            ]
            rows.append({"strategy": name, "calibration_prompts": size, **_mean(metrics)})
    return rows


def budget_curve(
    scores: np.ndarray,
    reward: np.ndarray,
    cost: np.ndarray,
    teachers: list[str],
    fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25),
) -> list[dict[str, float]]:
    """Reward given up for money saved: the `budget` policy at fractions of argmax's cost.
    `scores` and `reward` are of the same prompts (a router's test-split scores, the
    test split's rewards)."""
    if scores.shape != reward.shape:
        raise ValueError(
            f"budget_curve: scores {scores.shape} and rewards {reward.shape} are not of the "
            "same prompts and teachers"
        )
    from persyn.config import RoutingPolicyConfig
    from persyn.policies import make_policy, policy_report

    argmax_cost = float(cost[choose_teachers(scores)].sum())
    floor = float(cost.min()) * len(scores)
    rows = []
    for fraction in fractions:
        budget = max(argmax_cost * fraction, floor)
        policy = make_policy(RoutingPolicyConfig(kind="budget", budget=budget), teachers, cost)
        report = policy_report(scores, policy.choose(scores), cost, teachers, reward)
        rows.append(
            {
                "budget_fraction": fraction,
                "cost": report["cost"],
                "money_saved": report["money_saved"],
                "reward": report["reward"],
                "reward_given_up": report["reward_given_up"],
            }
        )
    return rows


def _mean(metrics: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmean([m[k] for m in metrics])) for k in METRIC_COLUMNS}


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def router_table(results: dict[str, dict[str, float]]) -> str:
    return markdown_table(
        ["router", *METRIC_COLUMNS.values()],
        [[kind, *(m[k] for k in METRIC_COLUMNS)] for kind, m in results.items()],
    )


def curve_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    columns = keys + list(METRIC_COLUMNS)
    headers = [METRIC_COLUMNS.get(k, k.replace("_", " ")) for k in columns]
    return markdown_table(headers, [[r[k] for k in columns] for r in rows])


def evaluate_routers(
    run: Any, kinds: list[str] | None = None, sizes: list[int] | None = None
) -> dict[str, Any]:
    """Compare routers on a run's test calibration prompts; write `router/eval.{json,md}`."""
    from persyn.policies import cost_per_prompt
    from persyn.stages.routing import expected_prompt_tokens, mean_response_tokens

    cfg = run.cfg
    data = held_out_from_run(run)
    kinds = kinds or list(dict.fromkeys([cfg.router.kind, "bradley-terry", *BASELINES]))
    encoder = PromptEncoder(cfg.router.backbone, cfg.router.embed_batch_size)
    n_train = len(data.train_texts)
    sizes = sizes or [max(2, round(n_train * f)) for f in (0.1, 0.25, 0.5, 1.0)]
    result: dict[str, Any] = {
        "train_prompts": n_train,
        "val_prompts": len(data.val_texts),
        "test_prompts": len(data.test_texts),
        "routers": compare_routers(data, cfg.router, kinds, encoder),
        "learning_curve": learning_curve(data, cfg.router, sizes, encoder=encoder),
    }
    sections = [
        f"## Routers on the test split: {len(data.test_texts)} calibration prompts "
        f"(trained on {n_train}, epoch picked on {len(data.val_texts)} others)\n\n"
        + router_table(result["routers"]),
        f"## Learning curve ({cfg.router.kind}, test-split metrics)\n\n"
        + curve_table(result["learning_curve"], ["calibration_prompts"]),
    ]
    prompt_tokens = expected_prompt_tokens(run, run.store.split().router_test)
    cost = cost_per_prompt(cfg, mean_response_tokens(run), prompt_tokens)
    if cost.any():
        scores = fit_and_score(data, cfg.router, encoder)[1]
        charged = np.where(np.isfinite(data.test_reward), data.test_reward, data.failure_reward)
        result["budget_curve"] = budget_curve(scores, charged, cost, data.teachers)
        sections.append(
            "## Budget policy (reward given up for money saved)\n\n"
            + markdown_table(
                ["budget / argmax cost", "cost", "money saved", "mean reward", "reward given up"],
                [list(r.values()) for r in result["budget_curve"]],
            )
        )
    markdown = "\n\n".join(sections) + "\n"
    result["path"] = str(run.store.write_router_eval(result, markdown))
    result["markdown"] = markdown
    return result

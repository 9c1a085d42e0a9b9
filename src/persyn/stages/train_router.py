"""train-router: fit the configured router on the calibration rewards of the train split;
metrics and per-prompt predictions on the held-out split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.method import any_ordered_pair, choose_teachers
from persyn.progress import bar, log
from persyn.router.metrics import routing_metrics
from persyn.router.routers import make_router
from persyn.stages.common import StageError

if TYPE_CHECKING:
    from persyn.run import Run


def train_router(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    split = run.store.split()
    by_id = run.prompts_by_id()
    rewards = run.store.rewards()
    train, val = rewards.subset(split.router_train), rewards.subset(split.router_val)
    test = rewards.subset(split.router_test)
    x_train = [by_id[i].text for i in train.ids]
    x_val = [by_id[i].text for i in val.ids]
    if cfg.router.kind != "random" and not any_ordered_pair(train.reward, cfg.router.tie_margin):
        # Checked here, not left to the router: its error names neither cause nor fix.
        raise StageError(
            f"train-router: on all {len(train.ids)} calibration prompts of the router's train "
            "split every teacher got the same reward (or none), so there is nothing to learn; "
            "check that rewards.quality applies to these prompts (math needs a reference: "
            "prompts.reference_field) and that the teachers' answers differ, or raise "
            "calibration.size"
        )
    router = make_router(cfg.router, cfg.teacher_names)
    epochs = cfg.router.lm.epochs if cfg.router.kind == "lm-bradley-terry" else cfg.router.epochs
    with bar("train router (epochs)", epochs) as progress:
        fit = router.fit(
            x_train,
            train.reward,
            x_val or None,
            val.reward if x_val else None,
            on_epoch=lambda _losses: progress.advance(),
        )
    # Per split: `train` (fitted), `val` (picked the best epoch), `test` (touched by
    # neither: the figures reported as the router's).
    metrics: dict[str, Any] = {
        "train": routing_metrics(router.scores(x_train), train.reward),
        "pairs": fit["pairs"],
        "best_epoch": fit.get("best_epoch"),
    }
    if len(val.ids):
        metrics["val"] = routing_metrics(router.scores(x_val), val.reward)
    test_scores = router.scores([by_id[i].text for i in test.ids])
    if len(test.ids):
        metrics["test"] = routing_metrics(test_scores, test.reward)
    router.save(run.store.router_dir())
    # Test choices next to the oracle's, for the report's agreement and confusion matrix.
    run.store.write_test_predictions(
        prediction_rows(cfg.teacher_names, test.ids, test_scores, test.reward, test.oracle)
    )
    run.store.write_router_metrics({**metrics, "history": fit.get("history", [])})
    if "test" in metrics:
        held = metrics["test"]
        log(
            f"train-router: {fit['pairs']} pairs; on {len(test.ids)} test prompts top-1 "
            f"{held['top1']:.2f}, pairwise accuracy {held['pairwise_accuracy']:.2f}"
        )
    else:
        log(f"train-router: {fit['pairs']} pairs; no test split (router.test_fraction 0)")
    return {"metrics": metrics}


def prediction_rows(
    names: list[str],
    ids: list[str],
    scores: np.ndarray,
    reward: np.ndarray,
    oracle: list[str | None],
) -> list[dict[str, Any]]:
    """Per prompt: the router's choice, the oracle's, and every teacher's score and reward."""
    return [
        {
            "prompt_id": pid,
            "router": names[c],
            "oracle": o,
            "router_scores": {n: round(float(v), 5) for n, v in zip(names, s, strict=True)},
            "reward": {
                n: None if np.isnan(v) else round(float(v), 6)
                for n, v in zip(names, r, strict=True)
            },
        }
        for pid, s, r, o, c in zip(
            ids, scores, reward, oracle, choose_teachers(scores).tolist(), strict=True
        )
    ]

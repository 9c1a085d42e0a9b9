"""train-router: fit the configured router on the calibration rewards of the train split;
metrics and per-prompt predictions on the held-out split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.progress import bar, log
from persyn.router.metrics import routing_metrics
from persyn.router.routers import make_router

if TYPE_CHECKING:
    from persyn.pipeline import Run


def train_router(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    split = run.store.split()
    by_id = run.prompts_by_id()
    rewards = run.store.rewards()
    train, val = rewards.subset(split.router_train), rewards.subset(split.router_val)
    x_train = [by_id[i].text for i in train.ids]
    x_val = [by_id[i].text for i in val.ids]
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
    metrics: dict[str, Any] = {
        "train": routing_metrics(router.scores(x_train), train.reward),
        "pairs": fit["pairs"],
        "best_epoch": fit.get("best_epoch"),
    }
    val_scores = router.scores(x_val)
    if len(val.ids):
        metrics["val"] = routing_metrics(val_scores, val.reward)
    router.save(run.store.router_dir())
    # Held-out choices next to the oracle's, for the report's agreement and confusion matrix.
    run.store.write_val_predictions(
        prediction_rows(cfg.teacher_names, val.ids, val_scores, val.reward, val.oracle)
    )
    run.store.write_router_metrics({**metrics, "history": fit.get("history", [])})
    held = metrics.get("val", metrics["train"])
    log(
        f"train-router: {fit['pairs']} pairs; held-out top-1 {held['top1']:.2f}, "
        f"pairwise accuracy {held['pairwise_accuracy']:.2f}"
    )
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
            "router": names[int(np.argmax(s))],
            "oracle": o,
            "router_scores": {n: round(float(v), 5) for n, v in zip(names, s, strict=True)},
            "reward": {
                n: None if np.isnan(v) else round(float(v), 6)
                for n, v in zip(names, r, strict=True)
            },
        }
        for pid, s, r, o in zip(ids, scores, reward, oracle, strict=True)
    ]

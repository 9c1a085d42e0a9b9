"""train-router: fit the configured router on the calibration rewards of the train split
(epoch chosen on the validation split); metrics and per-prompt predictions on the held-out
test split. The router saved to route is then refit on train + validation for the chosen
epochs (`router.refit`); `metrics.json` says which model routes (`routing_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import NoveltyReference, RewardTable, RouterCheckpoint
from persyn.config import RouterConfig
from persyn.method import (
    any_ordered_pair,
    choose_teachers,
    failure_reward,
    novelty,
    novelty_threshold,
)
from persyn.progress import bar, log
from persyn.router.metrics import best_fixed_teacher, routing_metrics
from persyn.router.routers import Router, make_router
from persyn.stages.common import StageError, routable_columns

if TYPE_CHECKING:
    from persyn.run import Run


def train_router(run: Run) -> dict[str, Any]:
    split = run.store.split()
    rewards = run.store.rewards()
    test = rewards.subset(split.router_test)
    metrics, fit, test_scores = fit_and_save(
        run,
        rewards,
        (split.router_train, split.router_val, split.router_test),
        run.store.router_dir(),
    )
    # Test choices next to the oracle's, for the report's agreement and confusion matrix.
    run.store.write_test_predictions(
        prediction_rows(run.cfg.teacher_names, test.ids, test_scores, test.reward, test.oracle)
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


def fit_and_save(
    run: Run, rewards: RewardTable, splits: tuple[list[str], list[str], list[str]], folder: Path
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """Fit the configured router on the `rewards` of the train split of `splits` (train,
    validation, test ids), the epoch picked on validation, refit on both
    (`router.refit`), and save the router that routes, with its novelty reference, to
    `folder`. Returns its metrics, the fit's record and the test prompts' scores (of the
    model trained on the train split alone). `train-router` and each round of active
    calibration (`persyn.stages.active`) train through here."""
    cfg = run.cfg
    by_id = run.prompts_by_id()
    train, val = rewards.subset(splits[0]), rewards.subset(splits[1])
    test = rewards.subset(splits[2])
    # Failed answers at -inf: they lose to every answer in training, as they are charged
    # in the metrics (`failure_reward`, the bottom of the normalisation's scale).
    train_reward, val_reward = train.routing_reward, val.routing_reward
    test_reward = test.routing_reward
    charge = failure_reward(cfg.rewards.normalization, len(cfg.teachers))
    x_train = [by_id[i].text for i in train.ids]
    x_val = [by_id[i].text for i in val.ids]
    if cfg.router.kind != "random" and not any_ordered_pair(train_reward, cfg.router.tie_margin):
        # Checked here, not left to the router: its error names neither cause nor fix.
        raise StageError(
            f"train-router: on all {len(train.ids)} calibration prompts of the router's train "
            "split every teacher got the same reward (or none), so there is nothing to learn; "
            "check that rewards.quality applies to these prompts (math needs a reference: "
            "prompts.reference_field) and that the teachers' answers differ, or raise "
            "calibration.size"
        )
    router = make_router(cfg.router, cfg.teacher_names)
    with bar("train router (epochs)", _epochs(cfg.router)) as progress:
        fit = router.fit(
            x_train,
            train_reward,
            x_val or None,
            val_reward if x_val else None,
            on_epoch=lambda _losses: progress.advance(),
            failure_reward=charge,
        )
    # Measured over the teachers that can generate (as `route` chooses), against the
    # teacher best on the train split; per split: `train` (fitted), `val` (picked the best
    # epoch), `test` (touched by neither: the figures reported as the router's).
    columns = routable_columns(cfg)
    fixed = best_fixed_teacher(train_reward, charge, columns)

    def measured(scores: np.ndarray, reward: np.ndarray) -> dict[str, float]:
        return routing_metrics(
            scores, reward, fixed_teacher=fixed, failure_reward=charge, teachers=columns
        )

    metrics: dict[str, Any] = {
        "train": measured(router.scores(x_train), train_reward),
        "pairs": fit["pairs"],
        "best_epoch": fit.get("best_epoch"),
    }
    if len(val.ids):
        metrics["val"] = measured(router.scores(x_val), val_reward)
    x_test = [by_id[i].text for i in test.ids]
    test_scores = router.scores(x_test)
    if len(test.ids):
        metrics["test"] = measured(test_scores, test_reward)
    routing = router
    metrics["routing_model"] = {"refit": False, "train_prompts": len(x_train)}
    if cfg.router.refit and x_val and cfg.router.kind != "random":
        # The router that routes learns from train + validation for the epochs validation
        # chose; the test split stays out of both, so it can measure this model too.
        epochs = None if fit.get("best_epoch") is None else fit["best_epoch"] + 1
        routing = make_router(refit_config(cfg.router, epochs), cfg.teacher_names)
        with bar("refit router on train + validation (epochs)", epochs or 1) as progress:
            routing.fit(
                x_train + x_val,
                np.concatenate([train_reward, val_reward]),
                on_epoch=lambda _losses: progress.advance(),
                failure_reward=charge,
            )
        metrics["routing_model"] = {
            "refit": True,
            "epochs": epochs,
            "train_prompts": len(x_train) + len(x_val),
        }
        if len(test.ids):
            metrics["routing_model"]["test"] = measured(routing.scores(x_test), test_reward)
    # Before `save`: `router.json`, written last, marks a whole checkpoint.
    reference = novelty_reference(routing, x_train, x_val + x_test, cfg.router)
    RouterCheckpoint(folder).write_novelty(reference)
    if reference is not None:
        metrics["novelty_threshold"] = reference.threshold
    routing.save(folder)
    return metrics, fit, test_scores


def novelty_reference(
    router: Router, reference: list[str], heldout: list[str], cfg: RouterConfig
) -> NoveltyReference | None:
    """The router-train prompts in `router`'s encoder space, and the novelty threshold:
    `cfg.novelty_quantile` of the held-out (validation + test) prompts' novelty relative
    to them. None for a router without an encoder space."""
    embeddings = router.embeddings(reference)
    if embeddings is None:
        return None
    heldout_embeddings = router.embeddings(heldout)
    assert heldout_embeddings is not None  # a router has an encoder space or not
    heldout_novelty = novelty(heldout_embeddings, embeddings, cfg.novelty_k)
    return NoveltyReference(
        embeddings=embeddings,
        heldout_novelty=heldout_novelty,
        threshold=novelty_threshold(heldout_novelty, cfg.novelty_quantile),
        k=cfg.novelty_k,
    )


def _epochs(cfg: RouterConfig) -> int:
    return cfg.lm.epochs if cfg.kind == "lm-bradley-terry" else cfg.epochs


def refit_config(cfg: RouterConfig, epochs: int | None) -> RouterConfig:
    """`cfg` training exactly `epochs` epochs (none: a router without epochs), no early
    stopping: without validation prompts the last epoch is kept."""
    if epochs is None:
        return cfg
    if cfg.kind == "lm-bradley-terry":
        lm = cfg.lm.model_copy(update={"epochs": epochs})
        return cfg.model_copy(update={"lm": lm, "patience": None})
    return cfg.model_copy(update={"epochs": epochs, "patience": None})


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

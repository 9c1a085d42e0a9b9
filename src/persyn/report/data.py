"""What the report reads from a finished run directory (`persyn report`, its plots)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts import RewardTable, open_run_dir
from persyn.config import RunConfig
from persyn.stages.tune import tuned_config


class ReportError(ValueError):
    """The run directory lacks what the report needs; the message says what to run."""


@dataclass
class ReportData:
    """Everything the report reads from a finished run directory."""

    run_dir: Path
    cfg: RunConfig
    teachers: list[str]
    prompts: dict[str, dict[str, Any]]
    rewards: RewardTable
    routes: list[dict[str, Any]]
    dataset: list[dict[str, Any]]
    summary: dict[str, Any]
    router_metrics: dict[str, Any]
    heldout: list[dict[str, Any]]
    # the held-out calibration prompts' novelty (None: the router has no encoder space)
    heldout_novelty: np.ndarray | None = None


def load_artifacts(run_dir: Path) -> ReportData:
    store = open_run_dir(run_dir)
    if store.marker("export") is None:
        raise ReportError(
            f"{run_dir}: not a finished run; finish the run first (persyn run CONFIG)"
        )
    # `rewards.alpha: auto` as the run resolved it: the chosen alpha and learnability signal
    cfg = tuned_config(store.config(), store)
    try:
        heldout = store.test_predictions()
    except FileNotFoundError as err:
        raise ReportError(str(err)) from None
    reference = store.router_checkpoint().novelty()
    return ReportData(
        run_dir=run_dir,
        cfg=cfg,
        teachers=store.reward_teachers(),
        prompts={p.id: p.to_row() for p in store.prompts()},
        rewards=store.rewards(),
        routes=store.routes(),
        dataset=store.dataset(),
        summary=store.summary(),
        router_metrics=store.router_metrics(),
        heldout=heldout,
        heldout_novelty=None if reference is None else reference.heldout_novelty,
    )

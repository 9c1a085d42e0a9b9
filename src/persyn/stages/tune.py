"""tune: under `rewards.alpha: auto`, choose the reward setting (alpha and learnability
signal) whose pilot student scores best (`persyn.eval.tune`); with an explicit alpha the
stage does nothing and no later stage depends on it, so those runs keep their keys.

The stages after it read the choice through `with_tuned_rewards`: the run's config with
`auto` replaced by the chosen alpha and signal, so `score` mixes, and `train-router`,
`route`, `export` and the card use, the chosen setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.config import RunConfig
from persyn.eval.tune import Setting, run_tune, setting_config
from persyn.eval.tune_report import tune_plan, write_tune
from persyn.progress import log
from persyn.run import Run

if TYPE_CHECKING:
    from persyn.artifacts import RunArtifacts

# The config sections the stage reads (`persyn.fingerprints`): the rewards, router and
# routing policy that pick each pilot's answers, the student, and the `tune` section (with
# the SFT recipe, evaluation).
TUNE_SECTIONS = ("student", "rewards.quality", "rewards.mix", "router", "routing", "tune")


def tune(run: Run) -> dict[str, Any]:
    if not run.cfg.rewards.tuned:
        return {"tuned": False, "alpha": run.cfg.rewards.alpha}
    for line in tune_plan(run):  # what it costs, before any training
        log(line)
    choice = tune_run(run)
    return {"tuned": True, **{k: choice[k] for k in ("alpha", "learnability", "reason")}}


def tune_run(run: Run) -> dict[str, Any]:
    """The tune study on the run's calibration answers; writes the table, plot and
    `choice.json` and returns the choice (with any `rewards.alpha`: `persyn tune`)."""
    files = run.store.tune_files()
    result = run_tune(run, files)
    write_tune(result, files, run.cfg.tune.confidence)
    return result.choice()


def tuned_config(cfg: RunConfig, store: RunArtifacts) -> RunConfig:
    """`cfg` with `rewards.alpha: auto` resolved to the recorded choice (the alpha and the
    learnability signal; the run's own signal keeps its options); as it is otherwise."""
    choice = store.tune_choice() if cfg.rewards.tuned else None
    if choice is None:
        return cfg
    return setting_config(cfg, Setting(choice["alpha"], choice["learnability"]))


def with_tuned_rewards(run: Run) -> Run:
    """`run` with `rewards.alpha: auto` resolved to the tune stage's choice (the same run
    with an explicit alpha, or before a choice exists)."""
    cfg = tuned_config(run.cfg, run.store)
    return run if cfg is run.cfg else Run(cfg, run.store, run.executor)

"""Route-then-Generate as one table of stages (the paper's Figure 1, top to bottom):

    prepare -> calibrate -> tune -> score -> train-router -> route -> generate -> export

Each `Stage` names its function (in `persyn.stages`, each called with a `persyn.run.Run`),
the config sections it reads (hashed in `persyn.fingerprints`) and the stages whose outputs
it reads. Everything else is derived from this table: a stage's
fingerprint (its sections and its upstream stages' fingerprints, so a change reruns the
stage and everything after it), the manifest, `persyn inspect`'s stage list and the CLI's
stage commands. Model calls are also cached row by row (see `persyn.stages.common`), so a
stage that reruns computes only what is missing or what a config change made stale.

A finished stage is trusted only while its outputs check out (`Stage.verify`, see
`persyn.stages.verify`): damaged or lost outputs, and failed rows, redo the stage. One
process at a time works in a run directory (`RunStore.lock`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from persyn.config import RunConfig, fingerprint
from persyn.fingerprints import config_sections
from persyn.progress import log, warn
from persyn.run import Run, validate, working_in
from persyn.stages import verify as checks
from persyn.stages.calibrate import calibrate
from persyn.stages.common import StageError
from persyn.stages.export import export
from persyn.stages.generate import generate
from persyn.stages.prepare import prepare
from persyn.stages.route import route
from persyn.stages.score import score
from persyn.stages.train_router import train_router
from persyn.stages.tune import TUNE_SECTIONS, tune, with_tuned_rewards
from persyn.store import DamagedMarker
from persyn.students import run_students

__all__ = ["STAGES", "Run", "StageError", "run_pipeline", "run_stage", "validate", "working_in"]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Run], dict[str, Any]]
    sections: tuple[str, ...]  # config sections it reads ("teachers": one per teacher)
    upstream: tuple[str, ...]  # stages whose artifacts it reads
    # are its outputs whole (checked before trusting its marker, given to it as a hint)
    verify: Callable[[Run, dict[str, Any] | None], checks.Outputs]


PIPELINE = (
    Stage(
        "prepare",
        prepare,
        ("prompts", "calibration", "calibration.source"),
        (),
        checks.verify_prepare,
    ),
    Stage("calibrate", calibrate, ("teachers",), ("prepare",), checks.verify_calibrate),
    # Only under `rewards.alpha: auto`: chooses what `score` mixes with (`upstream`).
    Stage("tune", tune, TUNE_SECTIONS, ("calibrate",), checks.verify_tune),
    Stage(
        "score",
        score,
        ("student", "rewards.quality", "rewards.mix"),
        ("calibrate",),
        checks.verify_score,
    ),
    Stage("train-router", train_router, ("router",), ("score",), checks.verify_train_router),
    Stage("route", route, ("routing",), ("train-router",), checks.verify_route),
    Stage(
        "generate", generate, ("teachers", "routing.fallback"), ("route",), checks.verify_generate
    ),
    # export also reads the calibration answers (the oracle's rows)
    Stage("export", export, ("export",), ("calibrate", "generate", "score"), checks.verify_export),
)
STAGE = {s.name: s for s in PIPELINE}
STAGES = [s.name for s in PIPELINE]


def upstream(cfg: RunConfig, stage: str) -> tuple[str, ...]:
    """The table's upstream stages, and `tune` for `score` under `rewards.alpha: auto` only
    (a run with an explicit alpha keeps the keys it always had)."""
    return STAGE[stage].upstream + (("tune",) if stage == "score" and cfg.rewards.tuned else ())


def stage_sections(cfg: RunConfig, stage: str) -> list[str]:
    """The sections `stage` depends on, its own and its upstream stages'."""
    own = [
        s
        for section in STAGE[stage].sections
        for s in (
            [f"teacher:{t}" for t in cfg.teacher_names] if section == "teachers" else [section]
        )
    ]
    above = [s for u in upstream(cfg, stage) for s in stage_sections(cfg, u)]
    return list(dict.fromkeys(above + own))


def stage_fingerprints(cfg: RunConfig) -> dict[str, str]:
    sections = config_sections(cfg)

    @cache
    def fp(stage: str) -> str:
        own = [sections[s] for s in stage_sections(cfg, stage)]
        return fingerprint(stage, own, [fp(u) for u in upstream(cfg, stage)])

    return {name: fp(name) for name in STAGES}


def write_manifest(run: Run) -> None:
    """`manifest.json`: the section hashes, and per finished stage its fingerprint, when it
    finished and the sections it depends on (what a change there reruns)."""
    stages = {}
    for name in STAGES:
        marker = run.store.marker(name)
        if marker is not None:
            stages[name] = {
                "fingerprint": marker["fingerprint"],
                "finished_at": marker["finished_at"],
                "depends_on": stage_sections(run.cfg, name),
            }
    run.store.write_manifest({"sections": config_sections(run.cfg), "stages": stages})


def run_stage(run: Run, stage: str, replace: bool = False) -> dict[str, Any]:
    """Run `stage` and every stage before it that is not done for this config, or whose
    outputs do not check out; returns the stage's completion marker (its statistics).
    Holds the run directory's lock throughout (`working_in`)."""
    fingerprints = stage_fingerprints(run.cfg)
    with working_in(run, replace):
        for i, s in enumerate(PIPELINE[: STAGES.index(stage) + 1]):
            # after `tune`: the run with the reward setting it chose
            worker = with_tuned_rewards(run) if i > STAGES.index("tune") else run
            # The digests of the upstream outputs this stage is computed from.
            above = upstream(run.cfg, s.name)
            inputs = {u: (run.store.marker(u) or {}).get("outputs") for u in above}
            if _needs_run(worker, s, fingerprints[s.name], inputs):
                stats = s.run(worker)
                found = s.verify(worker, None)
                marker = {**stats, "inputs": inputs, "outputs": found.digest}
                if found.files:
                    # what the next rerun compares against; failed rows: it retries them
                    marker.update(files=found.files, retry=found.retry)
                run.store.mark_done(s.name, fingerprints[s.name], marker)
            write_manifest(run)
        return run.store.marker(stage) or {}


def _needs_run(run: Run, stage: Stage, fp: str, inputs: dict[str, str | None]) -> bool:
    """Whether `stage` must (re)run: not done for this config, computed from other upstream
    outputs, or its outputs damaged, changed or holding failed rows. Says why, except for
    the expected cases (first run, config change)."""
    try:
        marker = run.store.read_marker(stage.name)
    except DamagedMarker as err:
        warn(f"{stage.name}: {err}; redoing the stage")
        return True
    if marker is None or marker["fingerprint"] != fp:
        return True
    # Markers from before persyn recorded inputs and outputs are trusted on those counts.
    if marker.get("inputs", inputs) != inputs:
        return True
    found = stage.verify(run, marker)
    if found.damaged or marker.get("outputs", found.digest) != found.digest:
        lost = found.damaged or "its outputs changed since it finished"
        warn(f"{stage.name}: {lost}; redoing the stage")
        return True
    if found.retry:
        log(f"{stage.name}: {found.retry}; redoing the stage")
        return True
    # Intact. A marker from an older persyn gets the digest; after a check of the rows
    # themselves (a log was rewritten), the logs are recorded for a quick check next time.
    refresh: dict[str, Any] = {}
    if "outputs" not in marker:
        refresh["outputs"] = found.digest
    if found.files and found.files != marker.get("files"):
        refresh["files"] = found.files
    if refresh:
        run.store.update_marker(stage.name, **refresh)
    return False


def run_pipeline(
    cfg: RunConfig, run_dir: str | None = None, replace: bool = False, student: str | None = None
) -> dict[str, Any]:
    """Every stage; returns the summary. `replace`: see `working_in`; `student`: `run_students`."""
    validate(cfg)
    run = Run.open(cfg, run_dir)
    with working_in(run, replace):
        # Where the run is, `--run-dir` included (the demo's packaged config names its own).
        run.store.write_config(cfg.model_copy(update={"run_dir": str(run.store.root)}))
        if cfg.students or student is not None:
            return run_students(run, student, replace, lambda one: run_stage(one, "export"))
        run_stage(run, "export")
        return run.store.summary()

"""Route-then-Generate as one table of stages (the paper's Figure 1, top to bottom):

    prepare -> calibrate -> score -> train-router -> route -> generate -> export

Each `Stage` names its function (in `persyn.stages`), the config sections it reads and the
stages whose outputs it reads. Everything else is derived from this table: a stage's
fingerprint (its sections and its upstream stages' fingerprints, so a change reruns the
stage and everything after it), the manifest, `persyn inspect`'s stage list and the CLI's
stage commands. Model calls are also cached row by row (see `persyn.stages.common`), so a
stage that reruns computes only what is missing or what a config change made stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from persyn.artifacts import RunArtifacts
from persyn.config import RunConfig, fingerprint
from persyn.executors import EXECUTORS, Executor
from persyn.models import check_model_exists
from persyn.rewards.quality import quality_signal
from persyn.stages.calibrate import calibrate
from persyn.stages.common import (
    StageError,
    quality_fingerprint,
    student_fingerprint,
    teacher_fingerprint,
)
from persyn.stages.export import export
from persyn.stages.generate import generate
from persyn.stages.prepare import prepare
from persyn.stages.route import route
from persyn.stages.score import score
from persyn.stages.train_router import train_router
from persyn.teachers.base import Prompt, backend_class

__all__ = ["STAGES", "Run", "StageError", "run_pipeline", "run_stage", "validate"]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Run], dict[str, Any]]
    sections: tuple[str, ...]  # config sections it reads ("teachers": one per teacher)
    upstream: tuple[str, ...]  # stages whose artifacts it reads


PIPELINE = (
    Stage("prepare", prepare, ("prompts", "calibration"), ()),
    Stage("calibrate", calibrate, ("teachers",), ("prepare",)),
    Stage("score", score, ("student", "rewards.quality", "rewards.mix"), ("calibrate",)),
    Stage("train-router", train_router, ("router",), ("score",)),
    Stage("route", route, ("routing",), ("train-router",)),
    Stage("generate", generate, ("teachers",), ("route",)),
    Stage("export", export, ("export",), ("generate", "score")),
)
STAGE = {s.name: s for s in PIPELINE}
STAGES = [s.name for s in PIPELINE]

# The part of the config behind each section name (the same parts the row caches key on:
# a teacher's cost is in `routing`, not in the teacher's own section).
SECTIONS: dict[str, Callable[[RunConfig], Any]] = {
    "prompts": lambda c: fingerprint(c.prompts),
    "calibration": lambda c: fingerprint(c.calibration, c.router.val_fraction, c.router.seed),
    "student": student_fingerprint,
    "rewards.quality": quality_fingerprint,
    "rewards.mix": lambda c: fingerprint(c.rewards.alpha, c.rewards.normalization),
    "router": lambda c: fingerprint(c.router),
    "routing": lambda c: fingerprint(c.routing, [t.cost_per_1k_tokens for t in c.teachers]),
    # The card shows the whole config; where the run lives changes nothing in it.
    "export": lambda c: fingerprint(c.model_dump(mode="json", exclude={"run_dir"})),
}


def config_sections(cfg: RunConfig) -> dict[str, str]:
    """Content hash of each config section, with `teachers` as one entry per teacher."""
    named = {name: part(cfg) for name, part in SECTIONS.items()}
    return {**named, **{f"teacher:{t.name}": teacher_fingerprint(t) for t in cfg.teachers}}


def stage_sections(cfg: RunConfig, stage: str) -> list[str]:
    """The sections `stage` depends on, its own and its upstream stages'."""
    own = [
        s
        for section in STAGE[stage].sections
        for s in (
            [f"teacher:{t}" for t in cfg.teacher_names] if section == "teachers" else [section]
        )
    ]
    upstream = [s for u in STAGE[stage].upstream for s in stage_sections(cfg, u)]
    return list(dict.fromkeys(upstream + own))


def stage_fingerprints(cfg: RunConfig) -> dict[str, str]:
    sections = config_sections(cfg)

    @cache
    def fp(stage: str) -> str:
        own = [sections[s] for s in stage_sections(cfg, stage)]
        return fingerprint(stage, own, [fp(u) for u in STAGE[stage].upstream])

    return {name: fp(name) for name in STAGES}


@dataclass
class Run:
    """One run: its config, its run directory and where the heavy work runs."""

    cfg: RunConfig
    store: RunArtifacts
    executor: Executor
    fingerprints: dict[str, str] = field(init=False, repr=False)
    _prompts: list[Prompt] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.fingerprints = stage_fingerprints(self.cfg)

    @classmethod
    def open(cls, cfg: RunConfig, run_dir: str | None = None) -> Run:
        return cls(cfg, RunArtifacts(run_dir or cfg.run_dir), make_executor(cfg))

    def fingerprint(self, stage: str) -> str:
        return self.fingerprints[stage]

    @property
    def prompts(self) -> list[Prompt]:
        if self._prompts is None:
            self._prompts = self.store.prompts()
        return self._prompts

    def set_prompts(self, prompts: list[Prompt]) -> None:
        self._prompts = prompts

    def prompts_by_id(self) -> dict[str, Prompt]:
        return {p.id: p for p in self.prompts}


def make_executor(cfg: RunConfig) -> Executor:
    if cfg.executor.kind == "ray":
        from persyn.executors_ray import RayExecutor

        return RayExecutor(cfg.executor)
    return EXECUTORS[cfg.executor.kind]()


def validate(cfg: RunConfig) -> None:
    """Checks that need no model: backends importable, local model paths present."""
    check_model_exists(cfg.student, "student")
    for i, t in enumerate(cfg.teachers):
        # Constructing a teacher loads nothing; it checks the backend's options (and keys).
        backend_class(t.backend)(t)
        if t.backend in {"hf", "vllm"}:
            check_model_exists(t, f"teachers[{i}]")
    for signal in cfg.rewards.quality:
        quality_signal(signal).check()  # options, judge backend, reward-model path


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


def run_stage(run: Run, stage: str) -> dict[str, Any]:
    """Run `stage` and every stage before it that is not done for this config; returns
    the stage's completion marker (its statistics)."""
    for s in PIPELINE[: STAGES.index(stage) + 1]:
        fp = run.fingerprint(s.name)
        if not run.store.is_done(s.name, fp):
            run.store.mark_done(s.name, fp, s.run(run))
        write_manifest(run)
    return run.store.marker(stage) or {}


def run_pipeline(cfg: RunConfig, run_dir: str | None = None) -> dict[str, Any]:
    """Every stage; returns the run summary."""
    validate(cfg)
    run = Run.open(cfg, run_dir)
    run.store.write_config(cfg)
    run_stage(run, "export")
    return run.store.summary()

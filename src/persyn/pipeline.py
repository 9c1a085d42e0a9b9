"""Route-then-Generate as one table of stages (the paper's Figure 1, top to bottom):

    prepare -> calibrate -> score -> train-router -> route -> generate -> export

Each `Stage` names its function (in `persyn.stages`), the config sections it reads and the
stages whose outputs it reads. Everything else is derived from this table: a stage's
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
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from persyn.artifacts import RunArtifacts
from persyn.calibration_source import source_fingerprint
from persyn.config import RunConfig, fingerprint
from persyn.config_checks import check_config
from persyn.data import source_digest
from persyn.executors import EXECUTORS, Executor
from persyn.models import check_model_exists, use_device
from persyn.progress import log, warn
from persyn.redact import remember_secrets
from persyn.rewards.quality import quality_signal
from persyn.stages.calibrate import calibrate
from persyn.stages.common import (
    StageError,
    prompt_fingerprint,
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
from persyn.stages.verify import (
    Outputs,
    verify_calibrate,
    verify_export,
    verify_generate,
    verify_prepare,
    verify_route,
    verify_score,
    verify_train_router,
)
from persyn.store import DamagedMarker
from persyn.teachers.base import Prompt, backend_class

__all__ = ["STAGES", "Run", "StageError", "run_pipeline", "run_stage", "validate"]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Run], dict[str, Any]]
    sections: tuple[str, ...]  # config sections it reads ("teachers": one per teacher)
    upstream: tuple[str, ...]  # stages whose artifacts it reads
    # are its outputs whole (checked before trusting its marker, given to it as a hint)
    verify: Callable[[Run, dict[str, Any] | None], Outputs]


PIPELINE = (
    Stage(
        "prepare",
        prepare,
        ("prompts", "calibration", "calibration.source"),
        (),
        verify_prepare,
    ),
    Stage("calibrate", calibrate, ("teachers",), ("prepare",), verify_calibrate),
    Stage(
        "score",
        score,
        ("student", "rewards.quality", "rewards.mix"),
        ("calibrate",),
        verify_score,
    ),
    Stage("train-router", train_router, ("router",), ("score",), verify_train_router),
    Stage("route", route, ("routing",), ("train-router",), verify_route),
    Stage("generate", generate, ("teachers",), ("route",), verify_generate),
    # export also reads the calibration answers (the oracle's rows)
    Stage("export", export, ("export",), ("calibrate", "generate", "score"), verify_export),
)
STAGE = {s.name: s for s in PIPELINE}
STAGES = [s.name for s in PIPELINE]

# The part of the config behind each section name (the same parts the row caches key on:
# a teacher's cost is in `routing`, not in the teacher's own section).
SECTIONS: dict[str, Callable[[RunConfig], Any]] = {
    # The prompts file's content too: an edited file is prepared again.
    "prompts": lambda c: prompts_fingerprint(c),
    "calibration": lambda c: fingerprint(
        c.calibration.model_dump(mode="json", exclude={"source"}),
        c.router.val_fraction,
        c.router.test_fraction,
        c.router.seed,
    ),
    # The imported data's mapping and content (a changed file reruns the import).
    "calibration.source": lambda c: source_fingerprint(c.calibration.source),
    "student": student_fingerprint,
    "rewards.quality": quality_fingerprint,
    "rewards.mix": lambda c: fingerprint(c.rewards.alpha, c.rewards.normalization),
    "router": lambda c: fingerprint(c.router),
    "routing": lambda c: fingerprint(
        c.routing,
        [(t.cost_per_1k_input_tokens, t.cost_per_1k_output_tokens) for t in c.teachers],
    ),
    # The card shows the whole config; where the run lives changes nothing in it.
    "export": lambda c: fingerprint(c.model_dump(mode="json", exclude={"run_dir"})),
}


def prompts_fingerprint(cfg: RunConfig) -> str:
    digest = source_digest(cfg.prompts)
    # Without a local file (a generated set, a hub id) the fingerprint is what it always was.
    return fingerprint(cfg.prompts) if digest is None else fingerprint(cfg.prompts, digest)


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
    _prompt_fps: dict[str, str] | None = field(default=None, init=False, repr=False)

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
        self._prompt_fps = None

    def prompt_fp(self, prompt_id: str) -> str:
        """`prompt_fingerprint` of a prompt (computed once per run: every stage asks)."""
        if self._prompt_fps is None:
            self._prompt_fps = {p.id: prompt_fingerprint(p) for p in self.prompts}
        return self._prompt_fps[prompt_id]

    def prompts_by_id(self) -> dict[str, Prompt]:
        return {p.id: p for p in self.prompts}


def make_executor(cfg: RunConfig) -> Executor:
    # Where work runs is decided here, models included: every load in this process follows
    # `cfg.device` (Ray replicas get it with their config).
    use_device(cfg.device)
    return EXECUTORS.load(cfg.executor.kind).from_config(cfg.executor, cfg.device)


def validate(cfg: RunConfig) -> None:
    """Checks that need no model: registry names known, backends importable, local model
    paths present."""
    # Secrets in the config (a key in a URL or `extra_body`) are scrubbed from every
    # message from now on, whatever their shape.
    remember_secrets(cfg.model_dump(mode="json"))
    check_config(cfg)
    check_model_exists(cfg.student, "student")
    for i, t in enumerate(cfg.teachers):
        # Constructing a teacher loads nothing; it checks the backend's options (and keys).
        backend = backend_class(t.backend)
        backend(t)
        if backend.loads_model:
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
    """Run `stage` and every stage before it that is not done for this config, or whose
    outputs do not check out; returns the stage's completion marker (its statistics).
    Holds the run directory's lock throughout."""
    with run.store.lock():
        for s in PIPELINE[: STAGES.index(stage) + 1]:
            # The digests of the upstream outputs this stage is computed from.
            inputs = {u: (run.store.marker(u) or {}).get("outputs") for u in s.upstream}
            if _needs_run(run, s, inputs):
                stats = s.run(run)
                found = s.verify(run, None)
                marker = {**stats, "inputs": inputs, "outputs": found.digest}
                if found.files:
                    # what the next rerun compares against; failed rows: it retries them
                    marker.update(files=found.files, retry=found.retry)
                run.store.mark_done(s.name, run.fingerprint(s.name), marker)
            write_manifest(run)
        return run.store.marker(stage) or {}


def _needs_run(run: Run, stage: Stage, inputs: dict[str, str | None]) -> bool:
    """Whether `stage` must (re)run: not done for this config, computed from other upstream
    outputs, or its outputs damaged, changed or holding failed rows. Says why, except for
    the expected cases (first run, config change)."""
    try:
        marker = run.store.read_marker(stage.name)
    except DamagedMarker as err:
        warn(f"{stage.name}: {err}; redoing the stage")
        return True
    if marker is None or marker["fingerprint"] != run.fingerprint(stage.name):
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


def run_pipeline(cfg: RunConfig, run_dir: str | None = None) -> dict[str, Any]:
    """Every stage; returns the run summary."""
    validate(cfg)
    run = Run.open(cfg, run_dir)
    with run.store.lock():
        run.store.write_config(cfg)
        run_stage(run, "export")
        return run.store.summary()

"""One run: its config, its run directory and where the heavy work runs; what every stage
is given (`persyn.stages`), apart from the pipeline that decides which stages run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from persyn.artifacts import RunArtifacts, StudentArtifacts
from persyn.config import ConfigError, RunConfig, fingerprint
from persyn.config_checks import check_config
from persyn.data import source_digest
from persyn.executors import EXECUTORS, Executor
from persyn.models import check_model_exists, use_device
from persyn.redact import remember_secrets
from persyn.rewards.quality import quality_signal
from persyn.teachers.base import Prompt, backend_class


@dataclass
class Run:
    """One run: its config, its run directory and where the heavy work runs."""

    cfg: RunConfig
    store: RunArtifacts
    executor: Executor
    _prompts: list[Prompt] | None = field(default=None, init=False, repr=False)
    _prompt_fps: dict[str, str] | None = field(default=None, init=False, repr=False)

    @classmethod
    def open(cls, cfg: RunConfig, run_dir: str | None = None) -> Run:
        return cls(cfg, RunArtifacts(run_dir or cfg.run_dir), make_executor(cfg))

    def for_student(self, name: str) -> Run:
        """Student `name` of `students:`: its one-student config, in its folder."""
        return Run(self.cfg.for_student(name), StudentArtifacts(self.store, name), self.executor)

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

    def claim(self, replace: bool = False) -> None:
        """Make the run directory this config's, refusing one that another config made
        (other prompts or another student) unless `replace`: pointing a copied config at
        an old `run_dir` must not silently replace that run's dataset and router. A moved
        or edited prompts file, teachers, rewards or router settings: the same run."""
        mine, theirs = run_owner(self.cfg), self.store.owner() or {}
        if theirs == mine:
            return
        other_prompts = (
            theirs.get("prompts", mine["prompts"]) != mine["prompts"]
            and theirs.get("prompts_digest") != mine["prompts_digest"]
        )
        other_student = theirs.get("student", mine["student"]) != mine["student"]
        if (other_prompts or other_student) and not replace:
            key = "prompts" if other_prompts else "student"
            raise ConfigError(
                f"{self.store.root}: a run of another config ({key} {theirs[key]} there, "
                f"{mine[key]} here); use another run_dir, or --replace to reuse this one "
                "(its results are replaced)"
            )
        self.store.write_owner(mine)


def run_owner(cfg: RunConfig) -> dict[str, Any]:
    """What makes a run directory a config's: its prompts, by where they come from (a file,
    a hub id, a generated set and its seed) and by the file's content, either of which may
    change (a moved file, an edited one) in the same run; and the student (one router and
    dataset per student; with `students:`, each student's folder has its own record)."""
    prompts = cfg.prompts
    return {
        "prompts": prompts.source or f"{prompts.builtin} (seed {prompts.seed})",
        "prompts_digest": source_digest(prompts),
        "student": "several (students:)" if cfg.students else cfg.student.model,
    }


@contextmanager
def working_in(run: Run, replace: bool = False) -> Iterator[None]:
    """Hold the run directory (its lock) for this config (`Run.claim`; `replace` reuses a
    directory another config made). A directory this call creates is removed again when
    `prepare` does not finish: a bad prompts file leaves no run directory behind."""
    root = run.store.root.absolute()
    fresh, top = not root.exists(), root
    while not top.parent.exists():  # the topmost folder the lock's mkdir will create
        top = top.parent
    try:
        with run.store.lock():
            run.claim(replace)
            yield
    except BaseException:
        if fresh and run.store.marker("prepare") is None:
            shutil.rmtree(top, ignore_errors=True)
        raise


def prompt_fingerprint(prompt: Prompt) -> str:
    """What a teacher is asked. Generation rows record it, so after the prompts file was
    edited an answer to the old text of the same id counts as missing, not as cached."""
    return fingerprint(prompt.messages)


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
    for i, s in enumerate(cfg.students):
        check_model_exists(s, f"students[{i}]")
    for i, t in enumerate(cfg.teachers):
        # Constructing a teacher loads nothing; it checks the backend's options (and keys).
        backend = backend_class(t.backend)
        backend(t)
        if backend.loads_model:
            check_model_exists(t, f"teachers[{i}]")
    for signal in cfg.rewards.quality:
        quality_signal(signal).check()  # options, judge backend, reward-model path

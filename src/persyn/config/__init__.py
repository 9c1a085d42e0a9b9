"""Typed run configuration, loaded from YAML.

One pydantic model per component, `extra="forbid"` so a misspelt key is an error, and a
description on every field. `load_config` turns any validation problem into a single
`ConfigError` line naming the file, the key and the problem, before any model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from persyn.config.base import (
    THINK_TAGS,
    ConfigError,
    GenerationParams,
    ModelRef,
    NamedStudentConfig,
    Section,
    SectionT,
    StudentConfig,
    TeacherConfig,
    backend_options,
    fingerprint,
    format_error,
)
from persyn.config.experiment import EvaluationConfig, ExperimentConfig, StudentTrainingConfig
from persyn.config.paths import resolve_paths
from persyn.config.rewards import LearnabilitySignalConfig, QualitySignal, RewardsConfig
from persyn.config.routing import RoutingPolicyConfig
from persyn.config.sections import (
    CalibrationConfig,
    CalibrationSource,
    ExecutorConfig,
    LMRouterConfig,
    PromptsConfig,
    RouterConfig,
)
from persyn.config.tune import PAPER_ALPHA, PAPER_SIGNAL, TuneConfig

__all__ = [
    "PAPER_ALPHA",
    "PAPER_SIGNAL",
    "THINK_TAGS",
    "CalibrationConfig",
    "CalibrationSource",
    "ConfigError",
    "EvaluationConfig",
    "ExecutorConfig",
    "ExperimentConfig",
    "GenerationParams",
    "LMRouterConfig",
    "LearnabilitySignalConfig",
    "ModelRef",
    "NamedStudentConfig",
    "PromptsConfig",
    "QualitySignal",
    "RewardsConfig",
    "RouterConfig",
    "RoutingPolicyConfig",
    "RunConfig",
    "Section",
    "SectionT",
    "StudentConfig",
    "StudentTrainingConfig",
    "TeacherConfig",
    "TuneConfig",
    "backend_options",
    "fingerprint",
    "format_error",
    "load_config",
    "parse_config",
]


class RunConfig(Section):
    name: str = Field("persyn-run", description="Run name (for the dataset card).")
    run_dir: str = Field("runs/persyn-run", description="Where every artifact is written.")
    student: StudentConfig
    students: list[NamedStudentConfig] = Field(
        default_factory=list,
        description="Several students in one run, instead of `student`: one calibration "
        "and one set of calibration answers, then per student its scores, router, routes "
        "and dataset in `students/<name>/`, and the report compares their routers. Each "
        "entry is a `student` section with a `name`.",
    )
    teachers: list[TeacherConfig] = Field(min_length=2)
    prompts: PromptsConfig
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    routing: RoutingPolicyConfig = Field(default_factory=RoutingPolicyConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    student_training: StudentTrainingConfig = Field(default_factory=StudentTrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    store: str | None = Field(
        None,
        description="The answer store every run shares (an SQLite file: answers are looked "
        "up there before a teacher is asked, and kept there): a path, `none` (this run's "
        "row logs only), or unset: $PERSYN_STORE, else the user cache "
        "(~/.cache/persyn/answers.sqlite).",
    )
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Share of failed rows a stage tolerates before failing."
    )
    max_cost: float | None = Field(
        None,
        ge=0,
        description="Most money the run directory may spend on teachers and judges (tokens at "
        "their cost_per_1k_*_tokens prices, `summary.json`'s `spend`): a teacher's requests "
        "are sent only while the money spent plus their worst-case cost (prompt bytes, "
        "max_new_tokens) stays within it; then the stage stops, answers kept, and a higher "
        "cap continues. Judging counts toward it but is not stopped by it. null: no cap.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where every model persyn loads runs (student scorer, router, reward "
        "model, HF teachers, student training): `auto` is `cuda` when a GPU is visible, else "
        "`cpu`; `cpu`, `cuda` or `cuda:N` force it. vLLM engines place themselves.",
    )

    @model_validator(mode="before")
    @classmethod
    def _student_of_students(cls, data: Any) -> Any:
        """With `students:` only, `student` is the first of them: what every one-student
        reader of the config (the shared stages, `persyn validate`) sees."""
        if isinstance(data, dict) and data.get("students") and "student" not in data:
            first = data["students"][0]
            if isinstance(first, dict):
                data = {**data, "student": {k: v for k, v in first.items() if k != "name"}}
        return data

    @model_serializer(mode="wrap")
    def _without_students(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A one-student config dumps as it always did: its fingerprints, saved config and
        # dataset card do not change.
        data = handler(self)
        if not self.students:
            data.pop("students", None)
        return data

    @model_validator(mode="after")
    def _unique_students(self) -> RunConfig:
        names = [s.name for s in self.students]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"students: student name {name!r} is used twice")
        if self.students and self.student != self.students[0].as_student():
            raise ValueError("set `student` (one student) or `students` (several), not both")
        return self

    @model_validator(mode="after")
    def _unique_teachers(self) -> RunConfig:
        seen: set[str] = set()
        for t in self.teachers:
            if t.name in seen:
                raise ValueError(f"teacher name {t.name!r} is used twice")
            seen.add(t.name)
        for key in ("max_share", "expected_tokens"):
            for name in getattr(self.routing, key):
                if name not in seen:
                    raise ValueError(
                        f"routing.{key}: unknown teacher {name!r}; the pool is {sorted(seen)}"
                    )
        teacher = self.routing.uncovered_teacher
        if teacher is not None and teacher not in seen:
            raise ValueError(
                f"routing.uncovered_teacher: unknown teacher {teacher!r}; the pool is "
                f"{sorted(seen)}"
            )
        self._check_import(seen)
        return self

    def _check_import(self, pool: set[str]) -> None:
        """Imported calibration data names teachers of the pool. (What backends and
        quality signals need of the source is theirs to say: `persyn.config_checks`.)"""
        source = self.calibration.source
        if source is None:
            return
        for key, names in (
            ("responses", source.responses),
            ("scores", source.scores),
            ("models", source.models.values()),
        ):
            for name in names:
                if name not in pool:
                    raise ValueError(
                        f"calibration.source.{key}: unknown teacher {name!r}; the pool is "
                        f"{sorted(pool)}"
                    )

    @property
    def teacher_names(self) -> list[str]:
        return [t.name for t in self.teachers]

    @property
    def student_names(self) -> list[str]:
        return [s.name for s in self.students]

    def for_student(self, name: str) -> RunConfig:
        """The one-student config of student `name` of `students:`."""
        for s in self.students:
            if s.name == name:
                return self.model_copy(update={"student": s.as_student(), "students": []})
        if not self.students:
            raise ConfigError(f"--student {name}: the config has one student (`student:`)")
        raise ConfigError(
            f"--student {name}: unknown student; the config's are {self.student_names}"
        )

    def teacher(self, name: str) -> TeacherConfig:
        for t in self.teachers:
            if t.name == name:
                return t
        raise ConfigError(f"unknown teacher {name!r}; the pool is {self.teacher_names}")


def parse_config(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_error(source, err)) from None


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None, resolve: bool = True
) -> RunConfig:
    """Read a YAML config (safe loader); `overrides` are dotted keys, e.g. `rewards.alpha`.

    Relative paths in the file resolve against the file's folder (`persyn.config.paths`);
    `resolve=False` reads them as written (a run directory's saved copy, whose paths were
    resolved when it was written)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path.absolute()}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    if resolve:
        resolve_paths(data, path.parent)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, str(path))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`teachers.0.name=x`: mapping keys by name, list items by index (from 0)."""
    node: Any = data
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate([*parents, leaf]):
        where = ".".join([*parents, leaf][: depth + 1])
        last = depth == len(parents)
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise ConfigError(
                    f"--set {dotted}: {where.rpartition('.')[0]} is a list of {len(node)} "
                    f"items; use an index from 0 to {len(node) - 1}"
                )
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(
                f"--set {dotted}: {where.rpartition('.')[0]} is a single value, not a section"
            )

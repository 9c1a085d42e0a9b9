"""Student fine-tuning with TRL's SFTTrainer on exported `messages` data.

Loss is on the assistant's tokens only. TRL's `assistant_only_loss` needs a chat template
with `{% generation %}` markers; many templates (SmolLM2's among them) have none, and TRL
cannot patch every template. So the format follows the template: with markers, rows stay
`messages` and every assistant turn is trained; without, each row becomes a conversational
prompt/completion pair (all turns but the last / the last assistant turn) and TRL's
completion-only loss trains exactly the answer, its end-of-turn token included.

A GGUF-loaded model is a de-quantised model that transformers refuses to save, so the
student is rebuilt (`from_config` + `load_state_dict`) before training: checkpoints and the
final model are then standard Hugging Face folders. The same command runs under
`accelerate launch` (data parallel) since all orchestration is the Trainer's, and a rerun
resumes from the last checkpoint in the output folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from persyn.artifacts import RunArtifacts, StudentFiles
from persyn.config import (
    ConfigError,
    RunConfig,
    StudentConfig,
    StudentTrainingConfig,
    fingerprint,
)
from persyn.data import DataError
from persyn.progress import log
from persyn.store import atomic_write_json, iter_jsonl


def _check_messages(where: str, row: dict[str, Any]) -> list[dict[str, str]]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of chat messages")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in {"system", "user", "assistant"}:
            raise DataError(f"{where}: messages[{k}] needs a role of system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{k}].content must be text")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise DataError(
            f"{where}: field 'messages' must end with a non-empty assistant message (the "
            "answer to learn); export a finished run with `persyn export CONFIG`"
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_sft_messages(path: str | Path) -> list[list[dict[str, str]]]:
    """The chat `messages` of every row of a JSONL file or a `datasets` folder, checked."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: training data not found (run `persyn run CONFIG` to export it)")
    if path.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded["train"]
        rows: Any = ((f"{path}: row {i}", r) for i, r in enumerate(loaded))
    else:
        rows = ((f"{path}: line {i + 1}", r) for i, r in enumerate(iter_jsonl(path)))
    out = [_check_messages(where, row) for where, row in rows]
    if not out:
        raise DataError(f"{path}: no training rows")
    return out


def has_generation_markers(tokenizer: Any) -> bool:
    from trl.chat_template_utils import has_generation_markers as trl_check

    return bool(tokenizer.chat_template) and trl_check(tokenizer.chat_template)


def training_rows(
    conversations: list[list[dict[str, str]]], assistant_masks: bool
) -> list[dict[str, Any]]:
    """TRL rows: `messages` (template has generation markers) or prompt/completion."""
    if assistant_masks:
        return [{"messages": c} for c in conversations]
    return [{"prompt": c[:-1], "completion": [c[-1]]} for c in conversations]


def load_trainable_student(ref: StudentConfig) -> tuple[Any, Any]:
    """(model, tokenizer) ready for training; a GGUF model is rebuilt as a plain one.

    Weights stay float32 unless the config names a dtype: mixed precision (`bf16` in
    `student_training.sft`) keeps float32 master weights, which optimisers want.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from persyn.models import load_tokenizer, resolve_model_path

    dtype = torch.float32 if ref.dtype == "auto" else getattr(torch, ref.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(ref.model),
        gguf_file=ref.gguf_file,
        revision=ref.revision,
        trust_remote_code=ref.trust_remote_code,
        dtype=dtype,
    )
    if ref.gguf_file:
        plain = AutoModelForCausalLM.from_config(
            model.config, dtype=dtype, trust_remote_code=ref.trust_remote_code
        )
        plain.load_state_dict(model.state_dict())
        plain.generation_config = model.generation_config
        # The rebuilt weights are plain tensors; a leftover GGUF quantization entry would
        # make the saved checkpoint unloadable elsewhere (vLLM refuses it).
        if hasattr(plain.config, "quantization_config"):
            del plain.config.quantization_config
        model = plain
    return model, load_tokenizer(ref)


def sft_config(
    tc: StudentTrainingConfig,
    student: StudentConfig,
    output_dir: Path,
    device: str | None = None,
    **loss: bool,
) -> Any:
    """`trl.SFTConfig` from the named fields, then `tc.sft` overrides (unknown key: error);
    `device` is a `RunConfig.device` setting (default: the process's rule)."""
    import torch
    from trl import SFTConfig

    from persyn.models import resolve_device

    device = resolve_device(device)

    known = {f.name for f in dataclasses.fields(SFTConfig)}
    unknown = sorted(set(tc.sft) - known)
    if unknown:
        raise ConfigError(
            f"student_training.sft: unknown SFTConfig field(s) {unknown}; see "
            "https://huggingface.co/docs/trl/sft_trainer#trl.SFTConfig"
        )
    fields: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": tc.epochs,
        "learning_rate": tc.learning_rate,
        "per_device_train_batch_size": tc.batch_size,
        "gradient_accumulation_steps": tc.gradient_accumulation_steps,
        "seed": tc.seed,
        "data_seed": tc.seed,
        "max_length": student.max_length,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "logging_steps": 10,
        "save_strategy": "steps",
        "save_steps": 100,
        "save_total_limit": 2,
        "report_to": "none",
        "disable_tqdm": True,
        # TRL picks its own device: `device: cpu` must say so (`use_cpu`), or a visible
        # GPU is used anyway. TRL defaults to bf16, which CPUs and older GPUs refuse.
        "use_cpu": device == "cpu",
        "bf16": device != "cpu" and torch.cuda.is_bf16_supported(),
        **loss,
    }
    fields.update(tc.sft)
    return SFTConfig(**fields)


def _lora_config(tc: StudentTrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=tc.lora_r,
        lora_alpha=tc.lora_alpha,
        lora_dropout=tc.lora_dropout,
        target_modules=tc.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def train_student(
    cfg: RunConfig, dataset: str | Path | None = None, output_dir: str | Path | None = None
) -> Path:
    """Fine-tune `cfg.student` on `dataset`; returns the folder of the final checkpoint.

    A finished output folder is left as it is (delete `final/` to train again); an
    unfinished one resumes from its last checkpoint. A folder holding a training on other
    data or settings is an error, never silently reused.
    """
    import datasets
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    tc = cfg.student_training
    data_path = Path(dataset or tc.dataset or RunArtifacts(cfg.run_dir).dataset_path())
    out = Path(output_dir or tc.output_dir or RunArtifacts(cfg.run_dir).student_dir())
    files = StudentFiles(out)
    final = files.final
    conversations = load_sft_messages(data_path)
    inputs_fp = fingerprint(conversations, tc, cfg.student.model_dump(exclude={"family"}))
    if files.inputs.is_file():
        previous = json.loads(files.inputs.read_text())["fingerprint"]
        if previous != inputs_fp:
            raise ConfigError(
                f"{out}: holds a student trained on other data or settings; delete it or "
                "choose another output folder"
            )
        if StudentFiles.record(final).is_file():
            log(f"train-student: {final} is finished; delete it to train again")
            return final
    else:
        atomic_write_json(files.inputs, {"fingerprint": inputs_fp, "dataset": str(data_path)})
    model, tokenizer = load_trainable_student(cfg.student)
    assistant_masks = has_generation_markers(tokenizer)
    loss = {"assistant_only_loss": True} if assistant_masks else {"completion_only_loss": True}
    args = sft_config(tc, cfg.student, out, cfg.device, **loss)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(training_rows(conversations, assistant_masks)),
        processing_class=tokenizer,
        peft_config=_lora_config(tc) if tc.method == "lora" else None,
    )
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last:
        log(f"train-student: resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)
    if tc.method == "lora":
        trainer.save_model(str(files.adapter))
    if not trainer.is_world_process_zero():
        return final
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if tc.method == "lora":
        # The final checkpoint is a plain model any tool loads; the adapter is kept apart.
        trained = trained.merge_and_unload()
    trained.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    atomic_write_json(
        StudentFiles.record(final),
        {
            "dataset": str(data_path),
            "fingerprint": inputs_fp,
            "resumed_from": last,
            "examples": len(conversations),
            "loss_on": "assistant turns (generation markers)"
            if assistant_masks
            else "last assistant turn (prompt/completion)",
            "student": cfg.student.model_dump(mode="json"),
            "student_training": tc.model_dump(mode="json"),
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "runtime_s": result.metrics.get("train_runtime"),
        },
    )
    log(
        f"train-student: {len(conversations)} examples, {result.global_step} steps, "
        f"loss {result.training_loss:.3f} -> {final}"
    )
    return final


def training_summary(final: str | Path) -> dict[str, Any]:
    return json.loads(StudentFiles.record(final).read_text())

"""Held-out evaluation of a student with the verifiers that score teacher quality.

The student answers the held-out prompts with batched greedy generation (the `hf` teacher
backend, run by the run's executor, so it runs locally or on Ray), and every answer is
checked as teacher answers are (`persyn.rewards.quality`): math final-answer accuracy with
math-verify; instruction following with if-verifiable, prompt-level strict and loose (every
instruction of the prompt must hold; loose also accepts the answer with its first/last line
or markdown removed, as IFEval does). `score` is the mean of the two task accuracies that
have prompts. Answers are cached per model, so a rerun only scores; the per-prompt scores
are written next to the metrics (`scores.jsonl`) for paired comparisons between students.

Held-out means held out: `check_held_out` compares evaluation prompts with training prompts
by normalised text (`normalise_text`), since ids say nothing about content (two built-in
draws reuse the same ids for different problems, and may draw the same problem).

`lm_eval` runs lm-evaluation-harness tasks (gsm8k, ifeval, ...) on the same checkpoint for
users with hub access; without the package or the hub it reports why it skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from persyn.artifacts import RunArtifacts, StudentEvalFiles, StudentFiles
from persyn.config import ConfigError, ModelRef, QualitySignal, RunConfig, TeacherConfig
from persyn.data import load_prompts
from persyn.executors import Executor
from persyn.progress import log
from persyn.rewards.quality import IFEvalConstraints, MathCorrectness
from persyn.store import RowLog, atomic_write_json, write_jsonl
from persyn.teachers.base import Generation, Prompt


def student_as_generator(cfg: RunConfig, model: ModelRef) -> TeacherConfig:
    """The student, answering without a system prompt, as its training data was shown."""
    ev = cfg.evaluation
    return TeacherConfig(
        name="student",
        backend="hf",
        **{key: getattr(model, key) for key in ModelRef.model_fields},  # where it loads from
        generation={"max_new_tokens": ev.max_new_tokens},
        batch_size=ev.batch_size,
    )


def held_out_prompts(cfg: RunConfig) -> list[Prompt]:
    if cfg.evaluation.prompts is None:
        raise ConfigError(
            "evaluation.prompts: not set; name held-out prompts (a file or a built-in set "
            "with another seed), never the training prompts"
        )
    return load_prompts(cfg.evaluation.prompts)


def normalise_text(text: str) -> str:
    """Lowercase, every run of whitespace made one space, punctuation stripped at both
    ends: "What is 2+2?" and "what is  2+2" are the same prompt, "2+3" is another."""
    return re.sub(r"\s+", " ", text.lower()).strip().strip(".,;:!?\"'()[]{}<>*` ")


def _excerpt(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def check_held_out(
    prompts: list[Prompt],
    training: Iterable[Prompt],
    drop: bool = False,
    where: str = "evaluation.prompts",
    other: str = "training",
) -> list[Prompt]:
    """`prompts` with no normalised text equal to a training prompt's.

    An overlap is a ConfigError naming up to 3 of the prompts and the count, or with
    `drop` (`evaluation.exclude_training_prompts`) those prompts are left out and counted
    in the log. `where` is the config key of `prompts`, `other` what `training` is.
    """
    seen = {normalise_text(p.text): p.id for p in training}
    overlap = [p for p in prompts if normalise_text(p.text) in seen]
    if not overlap:
        return prompts
    if drop:
        log(f"evaluation: {len(overlap)} held-out prompts equal a training prompt; left out")
        return [p for p in prompts if normalise_text(p.text) not in seen]
    named = "; ".join(
        f"{p.id} = {other} {seen[normalise_text(p.text)]} ({_excerpt(p.text)!r})"
        for p in overlap[:3]
    )
    remedy = (
        " or set evaluation.exclude_training_prompts: true to leave them out"
        if where == "evaluation.prompts"
        else ""
    )
    raise ConfigError(
        f"{where}: {len(overlap)} of {len(prompts)} held-out prompts equal a "
        f"{other} prompt (normalised text), e.g. {named}; draw a disjoint set{remedy}"
    )


def generate_answers(
    cfg: RunConfig, model: ModelRef, prompts: list[Prompt], executor: Executor, cache: Path
) -> dict[str, Generation]:
    """The student's answer per prompt id; answers already in `cache` are not regenerated."""
    rowlog = RowLog(cache, ("prompt_id",))
    todo = [p for p in prompts if (row := rowlog.get((p.id,))) is None or row["error"]]

    def sink(results: list[Generation]) -> None:
        rowlog.append(
            {
                "prompt_id": g.prompt_id,
                "text": g.text,
                "completion_tokens": g.completion_tokens,
                "error": g.error,
            }
            for g in results
        )

    executor.generate(student_as_generator(cfg, model), todo, sink)
    return {
        p.id: Generation(p.id, row["text"], 0, row["completion_tokens"], row["error"])
        for p in prompts
        if (row := rowlog.get((p.id,))) is not None
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def prompt_scores(prompts: list[Prompt], answers: dict[str, Generation]) -> list[dict[str, Any]]:
    """Per prompt: its task (`math`, `instruction` or None when no verifier applies) and
    its 0/1 scores; a failed or missing generation counts as wrong."""
    samples = [(p, answers[p.id].text if p.id in answers else "") for p in prompts]
    math = MathCorrectness(QualitySignal(kind="math")).score(samples)
    strict = IFEvalConstraints(
        QualitySignal(kind="ifeval", options={"mode": "strict", "binary": True})
    ).score(samples)
    loose = IFEvalConstraints(
        QualitySignal(kind="ifeval", options={"mode": "loose", "binary": True})
    ).score(samples)
    rows = []
    for p, m, s, lo in zip(prompts, math, strict, loose, strict=True):
        ok = p.id in answers and not answers[p.id].error
        row: dict[str, Any] = {"prompt_id": p.id, "task": None}
        if m is not None:
            row.update(task="math", math=(m.value or 0.0) if ok else 0.0)
        if s is not None:
            row.update(task="instruction", ifeval_strict=(s.value or 0.0) if ok else 0.0)
            row["ifeval_loose"] = ((lo.value or 0.0) if lo is not None else 0.0) if ok else 0.0
        # The score a task's accuracy averages: the strict check for instructions.
        row["score"] = row.get("math", row.get("ifeval_strict"))
        rows.append(row)
    return rows


def score_answers(prompts: list[Prompt], answers: dict[str, Generation]) -> dict[str, Any]:
    """Accuracies on the held-out prompts; a failed generation counts as wrong."""
    return summarise_scores(prompt_scores(prompts, answers), answers)


def summarise_scores(rows: list[dict[str, Any]], answers: dict[str, Generation]) -> dict[str, Any]:
    math_ok = [r["math"] for r in rows if "math" in r]
    strict_ok = [r["ifeval_strict"] for r in rows if "ifeval_strict" in r]
    loose_ok = [r["ifeval_loose"] for r in rows if "ifeval_loose" in r]
    task_scores = [s for s in (_mean(math_ok), _mean(strict_ok)) if s is not None]
    return {
        "prompts": len(rows),
        "math_prompts": len(math_ok),
        "math_accuracy": _mean(math_ok),
        "instruction_prompts": len(strict_ok),
        "ifeval_strict": _mean(strict_ok),
        "ifeval_loose": _mean(loose_ok),
        "score": _mean(task_scores),
        "failed_generations": sum(
            1 for r in rows if r["prompt_id"] not in answers or answers[r["prompt_id"]].error
        ),
        "mean_answer_tokens": _mean([float(a.completion_tokens) for a in answers.values()]),
    }


def evaluate_student(
    cfg: RunConfig,
    model: ModelRef,
    out_dir: str | Path,
    executor: Executor,
    prompts: list[Prompt] | None = None,
) -> dict[str, Any]:
    """Generate, score and write `answers.jsonl`, `scores.jsonl` (per prompt) and
    `metrics.json` in `out_dir`; `prompts` defaults to `evaluation.prompts`."""
    out = StudentEvalFiles(Path(out_dir))
    prompts = held_out_prompts(cfg) if prompts is None else prompts
    answers = generate_answers(cfg, model, prompts, executor, out.answers)
    rows = prompt_scores(prompts, answers)
    write_jsonl(out.scores, rows)
    metrics = summarise_scores(rows, answers)
    if cfg.evaluation.lm_eval_tasks:
        metrics["lm_eval"] = lm_eval(
            model, cfg.evaluation.lm_eval_tasks, cfg.evaluation.lm_eval_limit
        )
    atomic_write_json(out.metrics, {"model": model.model, **metrics})
    return metrics


def checkpoint_training_prompts(cfg: RunConfig, checkpoint: Path) -> list[Prompt]:
    """Every prompt `checkpoint` may have learned from: its training data (recorded by
    `persyn train` in `persyn_training.json`) and the run's prompt table, where present."""
    from persyn.student.sft import load_sft_messages

    prompts: list[Prompt] = []
    record = StudentFiles.record(checkpoint)
    if record.is_file():
        data = json.loads(record.read_text())["dataset"]
        for i, messages in enumerate(load_sft_messages(data)):
            prompts.append(Prompt(f"{Path(data).name}#{i}", messages))
    table = RunArtifacts(cfg.run_dir)
    if table.prompts_path().is_file():
        prompts.extend(table.prompts())
    return prompts


def evaluate_checkpoint(
    cfg: RunConfig, checkpoint: Path, out_dir: str | Path, executor: Executor
) -> dict[str, Any]:
    """`persyn evaluate`: `evaluate_student` on the held-out prompts, after checking them
    disjoint from the checkpoint's training prompts (`check_held_out`)."""
    training = checkpoint_training_prompts(cfg, checkpoint)
    prompts = check_held_out(
        held_out_prompts(cfg), training, drop=cfg.evaluation.exclude_training_prompts
    )
    model = ModelRef(model=str(checkpoint), dtype=cfg.student.dtype)
    return evaluate_student(cfg, model, out_dir, executor, prompts)


def lm_eval(model: ModelRef, tasks: list[str], limit: int | None) -> dict[str, Any]:
    """lm-evaluation-harness on a checkpoint: {task: {metric: value}} or {"skipped": why}."""
    if importlib.util.find_spec("lm_eval") is None:
        return {"skipped": "lm-eval is not installed (pip install lm-eval)"}
    if os.environ.get("HF_HUB_OFFLINE", "0") not in {"", "0"}:
        return {"skipped": "HF_HUB_OFFLINE is set and lm-eval tasks download their data sets"}
    import lm_eval as harness

    from persyn.models import resolve_model_path

    args = f"pretrained={resolve_model_path(model.model)}"
    if model.gguf_file:
        args += f",gguf_file={model.gguf_file}"
    try:
        results = harness.simple_evaluate(
            model="hf", model_args=args, tasks=tasks, limit=limit, batch_size="auto"
        )
    except (OSError, ConnectionError, ValueError) as err:
        # No hub access surfaces as a connection or file-not-found error from `datasets`.
        return {"skipped": f"lm-eval could not run: {type(err).__name__}: {err}"}
    return {
        task: {k: v for k, v in values.items() if isinstance(v, int | float)}
        for task, values in results["results"].items()
    }

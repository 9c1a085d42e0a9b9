"""What several stages share: row cache keys, teacher generation, the error budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.answer_store import answer_store, reuse_answers
from persyn.config import (
    THINK_TAGS,
    LearnabilitySignalConfig,
    RunConfig,
    TeacherConfig,
    fingerprint,
)
from persyn.models import chat_template_hash, dtype_name, resolve_device
from persyn.progress import log, warn
from persyn.redact import redact_text
from persyn.spend import Admission
from persyn.teachers.base import Generation, backend_class, can_generate, with_reasoning

if TYPE_CHECKING:
    from persyn.run import Run


class StageError(RuntimeError):
    """A stage could not finish; everything computed so far is kept in the run directory.

    The message is one line with secrets scrubbed: it often quotes a server's error."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(redact_text(message).split()))


def generating_teachers(cfg: RunConfig) -> list[str]:
    """The teachers that can answer new prompts, in pool order: routing, router metrics and
    every generating baseline choose among these; a teacher known only from imported
    answers is scored on calibration prompts but cannot generate."""
    return [t.name for t in cfg.teachers if can_generate(t)]


def generating_columns(cfg: RunConfig) -> list[int]:
    """The pool positions (reward and score columns) of `generating_teachers`."""
    able = set(generating_teachers(cfg))
    return [j for j, name in enumerate(cfg.teacher_names) if name in able]


def routable_columns(cfg: RunConfig) -> list[int]:
    """The pool positions routing chooses among: `generating_columns`, or every teacher
    when none can generate (a pool known only from imported answers)."""
    return generating_columns(cfg) or list(range(len(cfg.teachers)))


# -- row cache keys: a row is reused while the config it depends on is unchanged ---------
def teacher_fingerprint(t: TeacherConfig) -> str:
    """What decides a teacher's output: not its prices, family, batch size, parallelism,
    runtime options, whether cut answers are kept (`rewards.mix` and `export` have that) or whether
    its reasoning is exported; the code of a function teacher, so an edited function
    regenerates its rows. Think tags other than the default are part of it (they split
    the row's answer from its reasoning); the default is left out, so the keys of rows
    from before reasoning was kept apart stay valid."""
    backend = backend_class(t.backend)
    runtime = set(backend.runtime_options)
    options = {k: v for k, v in t.options.items() if k not in runtime}
    code = backend.code_digest(t)
    prices = {"cost_per_1k_input_tokens", "cost_per_1k_output_tokens"}
    how = {"family", "batch_size", "parallel", "options"}
    skipped: dict[str, Any] = dict.fromkeys({*how, *prices}, True)
    not_sent = {"keep_truncated", "train_on_reasoning"}
    if t.generation.think_tags == THINK_TAGS:
        not_sent.add("think_tags")
    return fingerprint(
        t.model_dump(exclude={**skipped, "generation": not_sent}),
        options,
        *([code] if code is not None else []),  # other backends keep their earlier keys
    )


# Batching and the family (it only picks a baseline teacher) change no learnability score;
# the engine (another kernel, another number) and max_length (where answers are cut) do.
NOT_IN_SCORES = {"batch_tokens", "family"}


def student_fingerprint(cfg: RunConfig) -> str:
    """The student's section as written, and the learnability signal it is read with: a
    change reruns `score`."""
    return fingerprint(cfg.student.model_dump(exclude=NOT_IN_SCORES), *signal_key(cfg))


def signal_key(cfg: RunConfig) -> list[dict[str, Any]]:
    """[the learnability signal's settings], or nothing for the paper's default: the keys
    of runs from before the signal could be chosen stay valid."""
    signal = cfg.rewards.learnability
    return [] if signal == LearnabilitySignalConfig() else [signal.model_dump(mode="json")]


def learnability_fingerprint(cfg: RunConfig) -> str:
    """The learnability rows' key: the student's settings as the scorer resolves them, with
    the precision `auto` becomes where it runs (not the word `auto`) and the chat template
    its tokenizer holds now (tokenizer files are read, no weights). Rows of another
    precision, engine, length or template are recomputed, never mixed with these; `dtype:
    auto` and `float32` on a CPU share rows. The GPU's index is left out. Another
    learnability signal is another key (`signal_key`)."""
    settings = cfg.student.model_dump(exclude=NOT_IN_SCORES | {"dtype"})
    precision = dtype_name(cfg.student, scoring_device(cfg))
    return fingerprint(settings, precision, chat_template_hash(cfg.student), *signal_key(cfg))


def scoring_device(cfg: RunConfig) -> str:
    """`cpu` or `cuda`: where the student scores. Ray replicas resolve `auto` themselves
    and see a GPU exactly when they are given one (`executor.num_gpus`)."""
    if cfg.device != "auto":
        return "cpu" if cfg.device == "cpu" else "cuda"
    if cfg.executor.kind == "ray":
        return "cuda" if cfg.executor.num_gpus > 0 else "cpu"
    return resolve_device("auto")


def quality_fingerprint(cfg: RunConfig) -> str:
    return fingerprint(cfg.rewards.quality)


def usable_generation(row: dict[str, Any] | None, prompt_fp: str) -> bool:
    """A finished answer to the prompt as it is now. Rows written before persyn recorded
    `prompt_fp`, and imported answers, are trusted as they are."""
    return row is not None and row["error"] is None and row.get("prompt_fp", prompt_fp) == prompt_fp


# -- generation (calibrate, generate and the baselines) ---------------------------------
def generate_rows(
    run: Run, teacher: TeacherConfig, prompt_ids: list[str], stage: str
) -> dict[str, int]:
    """Generate the rows of `prompt_ids` that `teacher` has not answered yet, within the
    error budget; error rows are retried on the next run."""
    asked = ask_teacher(run, teacher, prompt_ids, stage)
    check_errors(run.cfg, stage, f"teacher {teacher.name!r}", asked["errors"], len(prompt_ids))
    return {**asked, "errors": len(asked["errors"])}


def ask_teacher(
    run: Run, teacher: TeacherConfig, prompt_ids: list[str], stage: str
) -> dict[str, Any]:
    """Generate the rows of `prompt_ids` that `teacher` has not answered yet (error rows
    are asked again), taking what the answer store holds (`persyn.answer_store`) before
    asking; returns how many it asked (`generated`) and found stored (`from_store`), the
    rows that failed (`errors`) and how many answers were cut at max_new_tokens
    (`truncated`). The error budget is the caller's."""
    fp = teacher_fingerprint(teacher)
    rowlog = run.store.generation_log(teacher.name)
    by_id = run.prompts_by_id()

    def done(pid: str) -> bool:
        return usable_generation(rowlog.get((pid, fp)), run.prompt_fp(pid))

    todo = [by_id[pid] for pid in prompt_ids if not done(pid)]
    retried = sum((pid, fp) in rowlog for pid in (p.id for p in todo))
    if retried:
        log(f"{stage}: teacher {teacher.name!r}: retrying {retried} failed or outdated rows")
    answers = answer_store(run.cfg.store)  # answers earlier runs paid for
    stored: set[str] = set()
    if answers is not None and todo:
        ids = [p.id for p in todo]
        stored = reuse_answers(answers, rowlog, teacher.name, fp, ids, run.prompt_fp)
        todo = [p for p in todo if p.id not in stored]

    def sink(results: list[Generation]) -> None:
        think_tags = teacher.generation.think_tags
        rows = [generation_row(g.reasoning_apart(think_tags)) for g in results]
        rowlog.append(rows)
        if answers is not None:
            answers.put(teacher.name, teacher.model, rows, lambda pid: by_id[pid].messages)

    def generation_row(g: Generation) -> dict[str, Any]:
        return {
            "prompt_id": g.prompt_id,
            "teacher": teacher.name,
            "fp": fp,
            "prompt_fp": run.prompt_fp(g.prompt_id),
            "text": g.text,  # the answer alone: what is scored and exported
            "reasoning": g.reasoning,
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
            "finish_reason": g.finish_reason,
            "truncated": g.truncated,  # cut at max_new_tokens (`failed_answer`)
            # a server's message can quote the endpoint, credentials included
            "error": redact_text(g.error) if g.error is not None else empty_answer(g),
        }

    admission = Admission(run, teacher, todo)  # the spend cap (`max_cost`), if any
    try:
        record = run.store.batch_record(teacher.name, stage)  # a Batch API job to resume
        for batch in admission:
            run.executor.generate(teacher, batch, sink, resume_file=record)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        kept = sum(done(pid) for pid in prompt_ids)
        raise StageError(
            f"{stage}: teacher {teacher.name!r} failed: {err} "
            f"({kept}/{len(prompt_ids)} rows are saved; rerun to resume)"
        ) from err
    if admission.left:
        raise StageError(admission.stop_message(stage))
    errors = [rowlog.get((pid, fp)) for pid in prompt_ids if not done(pid)]
    cut = sum(bool((rowlog.get((pid, fp)) or {}).get("truncated")) for pid in prompt_ids)
    if cut:
        what = (
            f"{stage}: teacher {teacher.name!r}: {cut}/{len(prompt_ids)} answers cut at "
            f"max_new_tokens={teacher.generation.max_new_tokens}"
        )
        if teacher.generation.keep_truncated:
            log(f"{what}, kept (generation.keep_truncated)")
        else:
            warn(
                f"{what}: they count as failed answers; raise max_new_tokens, or set "
                "generation.keep_truncated: true where a cut answer is still useful"
            )
    return {"generated": len(todo), "from_store": len(stored), "errors": errors, "truncated": cut}


def empty_answer(g: Generation) -> str | None:
    """Why an answer without an error is no answer, or None."""
    if g.text.strip():
        return None
    if g.reasoning:
        return "no answer after the reasoning (raise max_new_tokens if it was cut)"
    return "empty response"


def trained_text(row: dict[str, Any], teacher: TeacherConfig) -> str:
    """The assistant message a dataset row gets from a generation row: the answer, with
    its reasoning in front where the teacher's `generation.train_on_reasoning` asks."""
    gen = teacher.generation
    if not gen.train_on_reasoning:
        return str(row["text"])
    return with_reasoning(row.get("reasoning"), row["text"], gen.think_tags or THINK_TAGS)


def check_errors(
    cfg: RunConfig, stage: str, who: str, errors: list[dict[str, Any] | None], total: int
) -> None:
    """Stop the stage when the share of failed rows exceeds `max_error_rate`; else warn."""
    if not errors:
        return
    rate = len(errors) / max(total, 1)
    first = next((e for e in errors if e), None)
    example = f"; first: {first['prompt_id']}: {first['error']}" if first else ""
    message = f"{stage}: {who}: {len(errors)}/{total} rows failed{example}"
    if rate > cfg.max_error_rate:
        raise StageError(
            f"{message} - above max_error_rate {cfg.max_error_rate}; finished rows are "
            "kept, fix the cause and rerun"
        )
    warn(f"{message} (within max_error_rate; counted in the export; a rerun retries them)")

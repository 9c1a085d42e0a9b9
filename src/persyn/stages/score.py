"""score: learnability and quality of every calibration response, mixed into one reward
per prompt and teacher, and the oracle's teacher per prompt.

Scores are cached row by row (`scores/*.jsonl`), so a new alpha or normalisation only
re-mixes them, and `alpha_sweep` re-mixes at several alphas without calling a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import RewardTable
from persyn.config import RunConfig, TeacherConfig, fingerprint
from persyn.config_checks import check_quality_coverage
from persyn.method import combine, oracle_choice
from persyn.progress import bar, log, warn
from persyn.redact import redact_text
from persyn.rewards.learnability_signals import learnability_tie_margin
from persyn.rewards.quality import quality_scorers
from persyn.stages.common import (
    StageError,
    check_errors,
    learnability_fingerprint,
    quality_fingerprint,
    teacher_fingerprint,
    usable_generation,
)
from persyn.stages.truncation import student_truncation, warn_student_truncation
from persyn.store import RowLog

if TYPE_CHECKING:
    from persyn.run import Run

QUALITY_CHUNK = 512  # responses per quality call; each chunk is saved before the next


def score(run: Run) -> dict[str, Any]:
    ids = run.store.split().calibration
    # The rewards may have changed since `prepare` checked them: check before scoring.
    check_quality_coverage(run.cfg, run.prompts)
    learn, qual, scored = score_responses(run, ids)
    mix_rewards(run, ids, learn, qual)
    expected = asked(run, ids)
    missing = np.argwhere(np.isnan(learn) & expected)
    check_errors(
        run.cfg,
        "score",
        "learnability/quality",
        missing_reasons(run, [(ids[i], run.cfg.teacher_names[j]) for i, j in missing]),
        int(expected.sum()),
    )
    coverage = quality_coverage(run, ids)
    log_coverage(coverage)
    too_long = student_truncation(run, ids)
    warn_student_truncation(too_long, run.cfg.student.max_length)
    # what the rows were scored under, as resolved now: a rerun on another device or after
    # the template changed redoes the stage (`verify_score`)
    return {
        "scored": scored,
        "missing": len(missing),
        "quality_coverage": coverage,
        "student_truncation": too_long,
        "learnability_fp": learnability_fingerprint(run.cfg),
    }


def quality_coverage(run: Run, ids: list[str]) -> dict[str, Any]:
    """What the quality signals scored among the answers to `ids`: per signal, the prompts
    and teacher answers it scored and those it applied to but could not score; per prompt
    kind, its prompts and how many a signal applied to (on the others only learnability
    ranked the teachers); `learnability_only_kinds`, the kinds no signal applied to."""
    plan = plan_scores(run, ids, retry_failed=False)
    by_id = run.prompts_by_id()
    quality_fp = quality_fingerprint(run.cfg)
    key_fps = {t.name: fingerprint(teacher_fingerprint(t), quality_fp) for t in run.cfg.teachers}
    scored: dict[str, set[tuple[str, str]]] = {s.label: set() for s in run.cfg.rewards.quality}
    failed: dict[str, set[tuple[str, str]]] = {s.label: set() for s in run.cfg.rewards.quality}
    covered: set[str] = set()
    for pid, t in plan.responses:
        row = plan.q_log.get((pid, t, key_fps[t]))
        for label, value in (row or {}).get("signals", {}).items():
            (scored if value is not None else failed)[label].add((pid, t))
            covered.add(pid)
    kinds: dict[str, dict[str, int]] = {}
    for pid in ids:
        counts = kinds.setdefault(by_id[pid].kind, {"prompts": 0, "covered": 0})
        counts["prompts"] += 1
        counts["covered"] += pid in covered
    return {
        "signals": {
            label: {
                "prompts": len({pid for pid, _ in scored[label]}),
                "answers": len(scored[label]),
                "failed_prompts": len({pid for pid, _ in failed[label]}),
                "failed_answers": len(failed[label]),
            }
            for label in scored
        },
        "kinds": kinds,
        "learnability_only_kinds": [k for k, c in kinds.items() if c["covered"] == 0],
    }


def log_coverage(coverage: dict[str, Any]) -> None:
    parts = [
        f"{label} {c['prompts']} prompts / {c['answers']} answers"
        + (f" ({c['failed_answers']} answers it could not score)" if c["failed_answers"] else "")
        for label, c in coverage["signals"].items()
    ]
    log(f"score: quality coverage: {'; '.join(parts) or 'no quality signal'}")
    for kind in coverage["learnability_only_kinds"]:
        warn(
            f"score: no quality signal applied to the {coverage['kinds'][kind]['prompts']} "
            f"calibration prompts of kind `{kind}`: their teachers are ranked on learnability "
            "alone (rewards.learnability_only)"
        )


def missing_reasons(run: Run, cells: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Why each (prompt, teacher) has no reward, from the rows that failed (for the stage's
    error line: the cause, not just "missing")."""
    if not cells:
        return []
    cfg = run.cfg
    learn_fp, quality_fp = learnability_fingerprint(cfg), quality_fingerprint(cfg)
    logs = {
        "learnability": run.store.score_log("learnability"),
        "quality": run.store.score_log("quality"),
    }
    generations = {t: run.store.generation_log(t) for t in {t for _, t in cells}}
    out = []
    for pid, t in cells:
        t_fp = teacher_fingerprint(cfg.teacher(t))
        gen = generations[t].get((pid, t_fp))
        why = f"{t}: no usable answer ({gen['error']})" if gen and gen["error"] else None
        for signal, key_fp in (("learnability", learn_fp), ("quality", quality_fp)):
            row = logs[signal].get((pid, t, fingerprint(t_fp, key_fp)))
            if why is None and row is not None and row["error"]:
                why = f"{t}: {signal}: {row['error']}"
        out.append({"prompt_id": pid, "error": why or f"{t}: not scored"})
    return out


def asked(run: Run, ids: list[str]) -> np.ndarray:
    """[prompts, teachers]: whether the generation log has a row (an answer or an error).
    Imported data without a teacher's answer to a prompt leaves no row: that cell has no
    reward by design, not by a failed score."""
    logs = [(run.store.generation_log(t.name), teacher_fingerprint(t)) for t in run.cfg.teachers]
    return np.array([[(pid, fp) in log for log, fp in logs] for pid in ids], dtype=bool).reshape(
        len(ids), len(logs)
    )


@dataclass
class ScorePlan:
    """Which cached scores of the responses to some prompts can be used, and which must be
    computed: missing, failed (a failed score is retried, like a failed generation) or
    scored for another prompt text or response (`input_fp` differs)."""

    responses: dict[tuple[str, str], dict[str, Any]]  # (prompt, teacher) -> generation row
    inputs: dict[tuple[str, str], str]  # (prompt, teacher) -> hash of prompt and response
    l_log: RowLog
    q_log: RowLog
    todo_l: list[tuple[str, str, str]]  # row keys (prompt, teacher, fp)
    todo_q: list[tuple[str, str, str]]


def plan_scores(run: Run, ids: list[str], retry_failed: bool = True) -> ScorePlan:
    cfg = run.cfg
    learn_fp, quality_fp = learnability_fingerprint(cfg), quality_fingerprint(cfg)
    teacher_fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    by_id = run.prompts_by_id()
    l_log, q_log = run.store.score_log("learnability"), run.store.score_log("quality")
    plan = ScorePlan({}, {}, l_log, q_log, [], [])
    for t in cfg.teacher_names:
        generations = run.store.generation_log(t)
        for pid in ids:
            row = generations.get((pid, teacher_fps[t]))
            if usable_generation(row, run.prompt_fp(pid)):
                plan.responses[pid, t] = row  # type: ignore[assignment]
    for pid in ids:
        for t in cfg.teacher_names:
            if (pid, t) not in plan.responses:
                continue
            inputs = fingerprint(by_id[pid].to_row(), plan.responses[pid, t]["text"])
            plan.inputs[pid, t] = inputs
            for rowlog, todo, key_fp in (
                (l_log, plan.todo_l, fingerprint(teacher_fps[t], learn_fp)),
                (q_log, plan.todo_q, fingerprint(teacher_fps[t], quality_fp)),
            ):
                row = rowlog.get((pid, t, key_fp))
                failed = row is not None and row["error"] is not None and retry_failed
                if row is None or failed or row.get("input_fp", inputs) != inputs:
                    todo.append((pid, t, key_fp))
    return plan


def score_responses(
    run: Run, ids: list[str], retry_failed: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw learnability and quality [prompts, teachers] of every teacher's cached response
    to `ids` (NaN where none), computing only the scores not cached (and, with
    `retry_failed`, those that failed); also the count computed. Used on calibration
    prompts by `score`, and on any prompts by Generate-then-Select."""
    cfg = run.cfg
    learn_fp, quality_fp = learnability_fingerprint(cfg), quality_fingerprint(cfg)
    teacher_fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    by_id = run.prompts_by_id()
    plan = plan_scores(run, ids, retry_failed)
    l_log, q_log, todo_l, todo_q = plan.l_log, plan.q_log, plan.todo_l, plan.todo_q

    def response(pid: str, teacher: str) -> dict[str, Any] | None:
        return plan.responses.get((pid, teacher))

    # Learnability: the student sees the prompt as it is, without the teacher's system prompt.
    pairs = [(by_id[pid].messages, response(pid, t)["text"]) for pid, t, _ in todo_l]

    def l_sink(indices: list[int], scores: list[Any]) -> None:
        rows = []
        for i, s in zip(indices, scores, strict=True):
            pid, t, key_fp = todo_l[i]
            error = s.error or (None if s.value is None or np.isfinite(s.value) else "non-finite")
            rows.append(
                # a non-finite value is stored as null: NaN/Infinity are not JSON
                {
                    "prompt_id": pid,
                    "teacher": t,
                    "fp": key_fp,
                    "input_fp": plan.inputs[pid, t],
                    "learnability": None if error == "non-finite" else s.value,
                    "signal": cfg.rewards.learnability.name,  # the range a value must be in
                    "response_tokens": s.response_tokens,
                    "truncated": s.truncated,
                    "error": error,
                }
            )
        l_log.append(rows)

    run.executor.learnability(cfg.student, cfg.rewards.learnability, pairs, l_sink)

    # In chunks, each saved when done: a judge or reward model over many responses is slow,
    # and a killed run keeps what was scored.
    # The signals load their models once for all chunks (`quality_scorers`).
    with (
        quality_scorers(cfg.rewards.quality) as quality_of,
        bar("score quality", len(todo_q)) as progress,
    ):
        for start in range(0, len(todo_q), QUALITY_CHUNK):
            chunk = todo_q[start : start + QUALITY_CHUNK]
            samples = [(by_id[pid], response(pid, t)["text"]) for pid, t, _ in chunk]
            qualities = quality_of(samples)
            q_log.append(
                {
                    "prompt_id": pid,
                    "teacher": t,
                    "fp": key_fp,
                    "input_fp": plan.inputs[pid, t],
                    **finite_quality(q),
                }
                for (pid, t, key_fp), q in zip(chunk, qualities, strict=True)
            )
            progress.advance(len(chunk))

    n_t = len(cfg.teachers)
    learn = np.full((len(ids), n_t), np.nan)
    qual = np.full((len(ids), n_t), np.nan)
    for i, pid in enumerate(ids):
        for j, t in enumerate(cfg.teacher_names):
            if (pid, t) not in plan.responses:
                continue  # no usable answer: an old score would be of another response
            lrow = l_log.get((pid, t, fingerprint(teacher_fps[t], learn_fp)))
            qrow = q_log.get((pid, t, fingerprint(teacher_fps[t], quality_fp)))
            if qrow and qrow.get("error"):
                continue  # a signal applies but could not score: no reward, not a guess
            if lrow and lrow["error"] is None:
                learn[i, j] = lrow["learnability"]
            if qrow and qrow["quality"] is not None:
                qual[i, j] = qrow["quality"]  # none: no signal applies (combine() handles it)
    return learn, qual, len(todo_l)


def finite_quality(row: dict[str, Any]) -> dict[str, Any]:
    """A quality row with any NaN or infinite value turned into an error (a broken reward
    model must not rank teachers, and NaN/Infinity are not JSON)."""
    if row["error"]:  # a judge's or reward model's message can quote its endpoint
        row = {**row, "error": redact_text(row["error"])}
    bad = sorted(k for k, v in row["signals"].items() if v is not None and not np.isfinite(v))
    if not bad:
        return row
    signals = {k: None if k in bad else v for k, v in row["signals"].items()}
    error = "; ".join(filter(None, [row["error"], f"non-finite quality from {', '.join(bad)}"]))
    return {**row, "quality": None, "signals": signals, "error": error}


def failed_answer(row: dict[str, Any] | None, teacher: TeacherConfig) -> bool:
    """Whether a generation row is an answer that failed (an error, an empty answer, or one
    cut at `max_new_tokens` unless the teacher keeps those: `generation.keep_truncated`):
    it loses to every answer of its prompt in training, is charged in router metrics and
    is not exported. No row (imported data without this teacher's answer) is not a
    failure; rows from before persyn recorded truncation count as whole."""
    if row is None:
        return False
    return row["error"] is not None or (
        bool(row.get("truncated")) and not teacher.generation.keep_truncated
    )


def failed_answers(run: Run, ids: list[str]) -> np.ndarray:
    """[prompts, teachers]: whether the teacher's answer to the prompt failed."""
    cfg = run.cfg
    logs = [(run.store.generation_log(t.name), teacher_fingerprint(t), t) for t in cfg.teachers]
    return np.array(
        [[failed_answer(log.get((pid, fp)), t) for log, fp, t in logs] for pid in ids],
        dtype=bool,
    ).reshape(len(ids), len(logs))


def combined_reward(
    cfg: RunConfig,
    learn: np.ndarray,
    qual: np.ndarray,
    alpha: float | None = None,
    failed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(combined reward, oracle's teacher index per prompt) at `alpha` (default: the
    config's), with the config's normalisation and tie margins (learnability's in the units
    of `cfg`'s signal: a tune setting's own); oracle ties go to the higher learnability,
    then the teacher with the lower output price. The answers of `failed` cells (a cut
    answer still has scores) are left out of the mix: no reward, and never the oracle's."""
    if failed is not None:
        learn, qual = np.where(failed, np.nan, learn), np.where(failed, np.nan, qual)
    rw = cfg.rewards
    margins = (rw.tie_margin_quality, learnability_tie_margin(rw))
    mix_alpha = rw.mix_alpha if alpha is None else alpha
    reward = combine(qual, learn, mix_alpha, rw.normalization, *margins)
    price = np.array([t.cost_per_1k_output_tokens for t in cfg.teachers], dtype=float)
    return reward, oracle_choice(reward, learn, price)


def mix_rewards(
    run: Run, ids: list[str], learn: np.ndarray, qual: np.ndarray, alpha: float | None = None
) -> dict[str, float]:
    """Normalise, mix with `alpha` and write the reward table (cheap: redone on every alpha):
    `rewards.jsonl` at the config's alpha, `rewards_alpha<a>.jsonl` for a sweep. Returns
    each teacher's oracle share."""
    rw = run.cfg.rewards
    table = reward_table(run, ids, learn, qual, alpha)
    run.store.write_rewards(table, alpha)
    if alpha is None:
        run.store.write_rewards_meta(table.teachers, rw.mix_alpha, rw.normalization)
    return {t: float(np.mean([o == t for o in table.oracle])) for t in table.teachers}


def reward_table(
    run: Run, ids: list[str], learn: np.ndarray, qual: np.ndarray, alpha: float | None = None
) -> RewardTable:
    """The reward table of `ids` from their raw scores (`combined_reward`)."""
    names = run.cfg.teacher_names
    failed = failed_answers(run, ids)
    reward, oracle = combined_reward(run.cfg, learn, qual, alpha, failed)
    oracle_names = [names[j] if j >= 0 else None for j in oracle]
    return RewardTable(list(ids), names, learn, qual, reward, oracle_names, failed)


def alpha_sweep(run: Run, alphas: list[float]) -> dict[str, dict[str, float]]:
    """Re-mix the cached calibration scores at each alpha: `rewards_alpha{a}.jsonl` per
    alpha and `alpha_sweep.json` with the oracle's share per teacher. Only the mix is
    recomputed, from the scores of a finished `score` stage: no model is called."""
    for a in alphas:
        if not 0 <= a <= 1:
            raise StageError(f"--alpha {a}: alpha must be in [0, 1]")
    ids = run.store.split().calibration
    # no model call: failed scores stay failed (the `score` stage retries them)
    learn, qual, computed = score_responses(run, ids, retry_failed=False)
    if computed:
        raise StageError(f"alpha sweep: {computed} scores were missing after `score`")
    shares = {f"{a:g}": mix_rewards(run, ids, learn, qual, a) for a in alphas}
    names = run.cfg.teacher_names
    normalization = run.cfg.rewards.normalization
    table = [
        f"Oracle share per teacher on {len(ids)} calibration prompts "
        f"({normalization} normalisation)",
        "",
        "| alpha | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
        *(
            f"| {a} | " + " | ".join(f"{row[t]:.0%}" for t in names) + " |"
            for a, row in shares.items()
        ),
    ]
    sweep = {"normalization": normalization, "oracle_share": shares}
    run.store.write_alpha_sweep(sweep, "\n".join(table) + "\n")
    return shares

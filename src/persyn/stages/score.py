"""score: learnability and quality of every calibration response, mixed into one reward
per prompt and teacher, and the oracle's teacher per prompt.

Scores are cached row by row (`scores/*.jsonl`), so a new alpha or normalisation only
re-mixes them, and `alpha_sweep` re-mixes at several alphas without calling a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import RewardTable
from persyn.config import fingerprint
from persyn.rewards.mix import combine, oracle_choice
from persyn.rewards.quality import combined_quality
from persyn.stages.common import (
    StageError,
    check_errors,
    quality_fingerprint,
    student_fingerprint,
    teacher_fingerprint,
)

if TYPE_CHECKING:
    from persyn.pipeline import Run

QUALITY_CHUNK = 512  # responses per quality call; each chunk is saved before the next


def score(run: Run) -> dict[str, Any]:
    ids = run.store.split().calibration
    learn, qual, scored = score_responses(run, ids)
    mix_rewards(run, ids, learn, qual)
    missing = np.argwhere(np.isnan(learn))
    check_errors(
        run.cfg,
        "score",
        "learnability/quality",
        [{"prompt_id": ids[i], "error": "missing score"} for i, _ in missing],
        learn.size,
    )
    return {"scored": scored, "missing": len(missing)}


def score_responses(run: Run, ids: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw learnability and quality [prompts, teachers] of every teacher's cached response
    to `ids` (NaN where none), computing only the scores not cached; also the count computed.
    Used on calibration prompts by `score`, and on any prompts by Generate-then-Select."""
    cfg = run.cfg
    student_fp, quality_fp = student_fingerprint(cfg), quality_fingerprint(cfg)
    teacher_fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    by_id = run.prompts_by_id()
    l_log, q_log = run.store.score_log("learnability"), run.store.score_log("quality")
    generations = {t.name: run.store.generation_log(t.name) for t in cfg.teachers}

    def response(pid: str, teacher: str) -> dict[str, Any] | None:
        row = generations[teacher].get((pid, teacher_fps[teacher]))
        return row if row is not None and row["error"] is None else None

    todo_l, todo_q = [], []
    for pid in ids:
        for t in cfg.teacher_names:
            if response(pid, t) is None:
                continue
            l_key = (pid, t, fingerprint(teacher_fps[t], student_fp))
            if l_key not in l_log:
                todo_l.append(l_key)
            q_key = (pid, t, fingerprint(teacher_fps[t], quality_fp))
            if q_key not in q_log:
                todo_q.append(q_key)

    # Learnability: the student sees the prompt as it is, without the teacher's system prompt.
    pairs = [(by_id[pid].messages, response(pid, t)["text"]) for pid, t, _ in todo_l]

    def l_sink(indices: list[int], scores: list[Any]) -> None:
        rows = []
        for i, s in zip(indices, scores, strict=True):
            pid, t, key_fp = todo_l[i]
            value = s.logprob_mean
            error = s.error or (None if value is None or np.isfinite(value) else "non-finite")
            rows.append(
                # a non-finite value is stored as null: NaN/Infinity are not JSON
                {
                    "prompt_id": pid,
                    "teacher": t,
                    "fp": key_fp,
                    "learnability": None if error == "non-finite" else value,
                    "response_tokens": s.response_tokens,
                    "truncated": s.truncated,
                    "error": error,
                }
            )
        l_log.append(rows)

    run.executor.learnability(cfg.student, pairs, l_sink)

    # In chunks, each saved when done: a judge or reward model over many responses is slow,
    # and a killed run keeps what was scored.
    for start in range(0, len(todo_q), QUALITY_CHUNK):
        chunk = todo_q[start : start + QUALITY_CHUNK]
        samples = [(by_id[pid], response(pid, t)["text"]) for pid, t, _ in chunk]
        qualities = combined_quality(cfg.rewards.quality, samples)
        q_log.append(
            {"prompt_id": pid, "teacher": t, "fp": key_fp, **finite_quality(q)}
            for (pid, t, key_fp), q in zip(chunk, qualities, strict=True)
        )

    n_t = len(cfg.teachers)
    learn = np.full((len(ids), n_t), np.nan)
    qual = np.full((len(ids), n_t), np.nan)
    for i, pid in enumerate(ids):
        for j, t in enumerate(cfg.teacher_names):
            lrow = l_log.get((pid, t, fingerprint(teacher_fps[t], student_fp)))
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
    bad = sorted(k for k, v in row["signals"].items() if v is not None and not np.isfinite(v))
    if not bad:
        return row
    signals = {k: None if k in bad else v for k, v in row["signals"].items()}
    error = "; ".join(filter(None, [row["error"], f"non-finite quality from {', '.join(bad)}"]))
    return {**row, "quality": None, "signals": signals, "error": error}


def mix_rewards(
    run: Run, ids: list[str], learn: np.ndarray, qual: np.ndarray, alpha: float | None = None
) -> dict[str, float]:
    """Normalise, mix with `alpha` and write the reward table (cheap: redone on every alpha):
    `rewards.jsonl` at the config's alpha, `rewards_alpha<a>.jsonl` for a sweep. Returns
    each teacher's oracle share."""
    rw = run.cfg.rewards
    names = run.cfg.teacher_names
    reward = combine(qual, learn, rw.alpha if alpha is None else alpha, rw.normalization)
    oracle = oracle_choice(reward)
    table = RewardTable(
        list(ids), names, learn, qual, reward, [names[j] if j >= 0 else None for j in oracle]
    )
    run.store.write_rewards(table, alpha)
    if alpha is None:
        run.store.write_rewards_meta(names, rw.alpha, rw.normalization)
    return {t: float(np.mean(oracle == j)) for j, t in enumerate(names)}


def alpha_sweep(run: Run, alphas: list[float]) -> dict[str, dict[str, float]]:
    """Re-mix the cached calibration scores at each alpha: `rewards_alpha{a}.jsonl` per
    alpha and `alpha_sweep.json` with the oracle's share per teacher. Only the mix is
    recomputed, from the scores of a finished `score` stage: no model is called."""
    for a in alphas:
        if not 0 <= a <= 1:
            raise StageError(f"--alpha {a}: alpha must be in [0, 1]")
    ids = run.store.split().calibration
    learn, qual, computed = score_responses(run, ids)
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

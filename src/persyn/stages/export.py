"""export: the personalised dataset (JSONL + `datasets` folder + card) and the run summary.

Calibration prompts take the oracle's teacher (every teacher answered them); routed prompts
take the router's. A prompt without a usable response (an error, or an answer cut at
`max_new_tokens` that its teacher does not keep) goes to `failed.jsonl` with why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from persyn.artifacts import dataset_row
from persyn.report.card import write_dataset_card
from persyn.report.summary import build_summary
from persyn.stages.common import teacher_fingerprint, usable_generation
from persyn.stages.score import failed_answer

if TYPE_CHECKING:
    from persyn.run import Run


def export(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    names = cfg.teacher_names
    fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    logs = {t: run.store.generation_log(t) for t in names}
    rewards = run.store.rewards()
    oracle = dict(zip(rewards.ids, rewards.oracle, strict=True))
    reward_row = {pid: i for i, pid in enumerate(rewards.ids)}
    routes = {r["prompt_id"]: r for r in run.store.routes(with_scores=True)}

    teacher_rows: Counter[str] = Counter()  # dataset rows per teacher, for the summary
    failed: list[dict[str, Any]] = []

    def rows() -> Iterator[dict[str, Any]]:
        """The dataset's rows, one at a time (written as they come: 100K rows are never in
        memory at once); prompts without a usable response go to `failed`."""
        for p in run.prompts:
            if p.id in reward_row:
                teacher, source, scores = oracle[p.id], "oracle", None
                known = rewards.by_teacher(reward_row[p.id])
            else:
                teacher, source = routes[p.id]["teacher"], "router"
                scores, known = routes[p.id]["router_scores"], None
            gen = logs[teacher].get((p.id, fps[teacher])) if teacher else None
            why = why_not_exported(run, p.id, teacher, gen)
            if why is not None:
                failed.append({"prompt_id": p.id, "teacher": teacher, "error": why})
                continue
            teacher_rows[teacher] += 1
            yield dataset_row(p, gen["text"], teacher, source, scores, known)

    run.store.write_dataset(rows())
    run.store.write_failed(failed)
    summary = build_summary(run, teacher_rows, failed, logs, fps)
    run.store.write_summary(summary)
    write_dataset_card(run.store, cfg, summary)
    return {"dataset_rows": teacher_rows.total(), "failed_rows": len(failed)}


# The reason a cut answer is left out (one text: `failed_reasons` counts equal reasons).
CUT_ANSWER = (
    "answer cut at max_new_tokens (the teacher's generation.keep_truncated: true keeps such "
    "answers)"
)


def why_not_exported(
    run: Run, prompt_id: str, teacher: str | None, gen: dict[str, Any] | None
) -> str | None:
    """Why the prompt's chosen answer is not a dataset row, or None when it is one."""
    if teacher is None:
        return "no teacher had a usable response"
    if gen is None:
        return "not generated"
    if not usable_generation(gen, run.prompt_fp(prompt_id)):
        return gen["error"] or "answer is to an earlier prompt text"
    if failed_answer(gen, run.cfg.teacher(teacher)):
        return CUT_ANSWER
    return None

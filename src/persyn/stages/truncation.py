"""Answers longer than the student reads: the calibration answers whose prompt and answer
exceed `student.max_length` tokens. The student scores only the part that fits (the
learnability row's `truncated` marks the pair), and fine-tuning on such an answer cuts it
too. Counted per teacher by `score`, for the summary, the report and the dataset card.

(Answers cut by the teacher, at `max_new_tokens`, are the generation rows' `truncated`:
`persyn.stages.score.failed_answer`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.config import fingerprint
from persyn.progress import warn
from persyn.stages.common import learnability_fingerprint, teacher_fingerprint, usable_generation

if TYPE_CHECKING:
    from persyn.run import Run


def student_truncation(run: Run, ids: list[str]) -> dict[str, dict[str, int]]:
    """Per teacher: its answers to `ids` the student scored, and how many of those did not
    fit in `student.max_length`."""
    cfg = run.cfg
    l_log = run.store.score_log("learnability")
    learn_fp = learnability_fingerprint(cfg)
    counts: dict[str, dict[str, int]] = {}
    for t in cfg.teachers:
        t_fp = teacher_fingerprint(t)
        generations, key_fp = run.store.generation_log(t.name), fingerprint(t_fp, learn_fp)
        scored = [
            l_log.get((pid, t.name, key_fp))
            for pid in ids
            if usable_generation(generations.get((pid, t_fp)), run.prompt_fp(pid))
        ]
        done = [row for row in scored if row is not None and row["error"] is None]
        counts[t.name] = {"scored": len(done), "truncated": sum(r["truncated"] for r in done)}
    return counts


def warn_student_truncation(counts: dict[str, Any], max_length: int) -> None:
    cut = {t: c for t, c in counts.items() if c["truncated"]}
    if cut:
        each = ", ".join(f"{t} {c['truncated']}/{c['scored']}" for t, c in cut.items())
        warn(
            f"score: calibration answers longer than student.max_length={max_length} tokens "
            f"with their prompt: {each}; the student scored the part that fits (marked "
            "`truncated` in the learnability rows)"
        )

"""Several students in one run (`students:` in the config, `persyn run --student NAME`).

The shared stages (`prepare`, `calibrate`) run once, in the top folder; each student's
stages run in its folder (`persyn.artifacts.students`), reading the shared split and
answers from the top. Then the top `summary.json` holds every finished student's summary
and their comparison (`persyn.report.students`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from persyn.report.students import students_summary
from persyn.run import Run, working_in


def run_students(
    run: Run, student: str | None, replace: bool, finish: Callable[[Run], Any]
) -> dict[str, Any]:
    """`finish` (every stage) for each student of `run.cfg`, or for `student` only; returns
    the top summary, written to the top folder."""
    names = run.cfg.student_names if student is None else [student]
    students = [run.for_student(name) for name in names]  # a wrong name: before any stage
    for one in students:
        with working_in(one, replace):
            one.store.write_config(one.cfg.model_copy(update={"run_dir": str(one.store.root)}))
            finish(one)
    summary = students_summary(run.store)
    run.store.write_summary(summary)
    return summary

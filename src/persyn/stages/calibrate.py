"""calibrate: every teacher answers every calibration prompt (Generate-then-Select on a
small set), so the router can learn from every teacher's rewards. With `calibration.source`
the answers come from the data instead (`persyn.stages.imported`); teachers generate only
the answers the data lacks, and only with `fill_missing`. Teachers on servers of their own
generate at the same time (`persyn.stages.lanes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.stages.common import generate_rows
from persyn.stages.imported import write_imported_rows
from persyn.stages.lanes import per_teacher
from persyn.teachers.base import can_generate

if TYPE_CHECKING:
    from persyn.config import TeacherConfig
    from persyn.run import Run


def calibrate(run: Run) -> dict[str, Any]:
    ids = run.store.split().calibration
    source = run.cfg.calibration.source
    together = run.cfg.max_cost is None  # under a spend cap, teachers take turns

    def answer(t: TeacherConfig) -> dict[str, int]:
        return generate_rows(run, t, ids, "calibrate")

    if source is None:
        return {"teachers": per_teacher(run.cfg.teachers, answer, together)}
    imported = write_imported_rows(run)
    asked = [t for t in run.cfg.teachers if source.fill_missing and can_generate(t)]
    generated = per_teacher(asked, answer, together)
    stats = {
        t.name: {
            "imported": imported[t.name],
            **generated.get(t.name, {"generated": 0, "errors": 0}),
        }
        for t in run.cfg.teachers
    }
    return {"teachers": stats, "imported": sum(imported.values())}

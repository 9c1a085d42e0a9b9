"""calibrate: every teacher answers every calibration prompt (Generate-then-Select on a
small set), so the router can learn from every teacher's rewards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.stages.common import generate_rows

if TYPE_CHECKING:
    from persyn.pipeline import Run


def calibrate(run: Run) -> dict[str, Any]:
    ids = run.store.split().calibration
    return {"teachers": {t.name: generate_rows(run, t, ids, "calibrate") for t in run.cfg.teachers}}

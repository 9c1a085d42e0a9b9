"""generate: each teacher answers only the prompts routed to it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persyn.stages.common import generate_rows

if TYPE_CHECKING:
    from persyn.run import Run


def generate(run: Run) -> dict[str, Any]:
    routes = run.store.routes()
    stats = {}
    for t in run.cfg.teachers:
        ids = [r["prompt_id"] for r in routes if r["teacher"] == t.name]
        stats[t.name] = generate_rows(run, t, ids, "generate")
    return {"teachers": stats}

"""Teachers that generate at the same time, in lanes (`persyn.teachers.base.lane`): the
teachers that compute on this machine's device take turns in one lane; teachers served
elsewhere (`parallel` backends) get a lane per server, where the teachers of one server
take turns. calibrate and generate hand their per-teacher work to `per_teacher`.

Under a spend cap (`max_cost`) teachers take turns: each teacher's requests are admitted
against the money the others' logs record, which lanes at the same time would both
overrun and read while it is written.

A failing teacher ends its own lane only: the other lanes run to their end, so no teacher
loses rows, or its turn, to another lane's failure; the failures are raised together once
all lanes are done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from persyn.config import TeacherConfig
from persyn.stages.common import StageError
from persyn.teachers.base import lane

Result = TypeVar("Result")


def lanes(teachers: list[TeacherConfig]) -> list[list[TeacherConfig]]:
    """The teachers grouped into lanes that run at the same time, each in config order:
    this machine's lane first, then one per server in order of first appearance."""
    grouped: dict[str | None, list[TeacherConfig]] = {None: []}
    for teacher in teachers:
        grouped.setdefault(lane(teacher), []).append(teacher)
    return [group for group in grouped.values() if group]


def per_teacher(
    teachers: list[TeacherConfig],
    work: Callable[[TeacherConfig], Result],
    together: bool = True,
) -> dict[str, Result]:
    """`work(teacher)` for every teacher, the lanes at the same time (all teachers in one
    lane unless `together`); the results by teacher name, in config order. A teacher's
    exception ends its lane (the teachers after it in the lane are not asked, as when
    teachers took turns) and no other: raised as it is when it is the only one, else all
    in one `StageError`."""
    results: dict[str, Result] = {}
    failures: dict[str, Exception] = {}

    def run_lane(lane: list[TeacherConfig]) -> None:
        for teacher in lane:
            try:
                results[teacher.name] = work(teacher)
            except Exception as err:
                failures[teacher.name] = err
                return

    groups = lanes(teachers) if together else [teachers]
    if len(groups) == 1:
        run_lane(groups[0])  # nothing to overlap: no thread
    else:
        # daemon: a Ctrl-C in the main thread ends the run without waiting for the lanes
        threads = [threading.Thread(target=run_lane, args=(g,), daemon=True) for g in groups]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # wakes up for KeyboardInterrupt
    failed = [failures[t.name] for t in teachers if t.name in failures]
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise StageError(f"{len(failed)} teachers failed: " + " | ".join(map(str, failed)))
    return {t.name: results[t.name] for t in teachers}

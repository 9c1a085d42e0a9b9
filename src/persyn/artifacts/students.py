"""The run directory of a run with several students (`students:` in the config).

The top folder is laid out as a one-student run's shared part, and each student has a
folder of its own under it:

    prompts.jsonl, calibration.json, imported.jsonl   the split, shared
    generations/, batches/         every teacher answer: calibration and routed, shared
    scores/quality.jsonl           quality scores (the student is not in their key), shared
    stages/{prepare,calibrate}.json   the shared stages' markers
    summary.json                   every student's summary and their comparison
    students/<name>/               the rest of a one-student run: config.yaml, scores/
                                   learnability.jsonl, rewards, router/, routes.jsonl,
                                   dataset, summary.json, stages/, report/

So a second student asks no teacher for the calibration answers, and its `generate` asks
only for the prompts its router sends to a teacher the other students' routers did not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from persyn.artifacts.run import RunArtifacts

#: the stages that run once for all students, in the top folder
SHARED_STAGES = ("prepare", "calibrate")
# What a student's folder reads from the top folder: (first part of the path, file or None
# for the whole folder).
_SHARED = {
    ("prompts.jsonl", None),
    ("calibration.json", None),
    ("imported.jsonl", None),
    ("generations", None),
    ("batches", None),
    ("scores", "quality.jsonl"),
    *(("stages", f"{stage}.json") for stage in SHARED_STAGES),
}


class StudentArtifacts(RunArtifacts):
    """A student's folder (`students/<name>/`): its own artifacts there, the shared ones
    (`_SHARED`) and the lock in the top folder."""

    def __init__(self, top: RunArtifacts, name: str) -> None:
        super().__init__(top.root / "students" / name)
        self.top = top

    def path(self, *parts: str) -> Path:
        head = Path(*parts).parts
        shared = (head[0], None) in _SHARED or tuple(head[:2]) in _SHARED
        return self.top.path(*parts) if shared else super().path(*parts)

    def name(self, path: Path) -> str:
        mine = self.root.resolve()
        return str(path.relative_to(mine if path.is_relative_to(mine) else self.top.root.resolve()))

    # One process at a time in the whole run: the students share the answer logs.
    def lock(self) -> AbstractContextManager[None]:
        return self.top.lock()

    def lock_holder(self) -> int | None:
        return self.top.lock_holder()


def student_folders(
    top: RunArtifacts, finished: bool = True
) -> Iterator[tuple[str, StudentArtifacts]]:
    """(name, folder) of each student of a run with several students, by name: those it
    has finished, or all it has begun (`finished=False`)."""
    folder = top.path("students")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for name in names:
        store = StudentArtifacts(top, name)
        if not finished or store.marker("export") is not None:
            yield name, store


def open_run_dir(run_dir: str | Path) -> RunArtifacts:
    """The artifacts of `run_dir`: a run's, or a student's folder of a run with several
    (in a `students` folder, without prompts of its own: they are in the top folder)."""
    root, top = RunArtifacts(run_dir), RunArtifacts(Path(run_dir).parent.parent)
    in_students = root.root.parent.name == "students" and top.prompts_path().exists()
    if in_students and not root.prompts_path().exists():
        return StudentArtifacts(top, root.root.name)
    return root

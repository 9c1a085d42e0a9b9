"""`persyn inspect RUN_DIR`: which stages are done, how many rows and errors, where things are.

Read-only: row logs are read as they are (a torn last line from a killed job is ignored,
not repaired; a damaged line is counted, not fatal), so inspecting a run that is still being
written, or a damaged one, is safe.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from persyn.artifacts import SHARED_STAGES, RowLogSpec, open_run_dir, student_folders
from persyn.pipeline import STAGES
from persyn.store import DamagedMarker


@dataclass
class Artifact:
    """One artifact: where it is and, for row logs, its rows (latest per key) and errors."""

    name: str
    path: Path
    exists: bool
    rows: int | None = None
    errors: int | None = None
    damaged: int = 0  # lines that are not JSON rows (the next run drops and recomputes them)


@dataclass
class RunInspection:
    run_dir: Path
    stages: dict[str, dict[str, Any] | None]  # stage -> completion marker, None if not done
    artifacts: list[Artifact] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # stage -> why its marker is unreadable
    running_pid: int | None = None  # the persyn process working on the run now, if any
    # a run with several students: per student begun, its folder and its stages not done
    students: dict[Path, list[str]] = field(default_factory=dict)

    @property
    def done(self) -> list[str]:
        return [s for s, marker in self.stages.items() if marker is not None]


def _latest_rows(path: Path, key_fields: tuple[str, ...]) -> tuple[list[dict[str, Any]], int]:
    """The rows (the last for each key, as in RowLog: reruns append) and how many lines are
    damaged; a torn last line (a job killed mid-write) is neither."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # b"" after the last newline, or the torn last line
    damaged = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[tuple(row.get(k) for k in key_fields)] = row
        except (ValueError, AttributeError):  # not JSON / not an object
            damaged += 1
    return list(rows.values()), damaged


def _row_log(spec: RowLogSpec) -> Artifact:
    if not spec.path.exists():
        return Artifact(spec.name, spec.path, exists=False)
    rows, damaged = _latest_rows(spec.path, spec.key_fields)
    failed = sum(1 for r in rows if spec.failed(r))
    return Artifact(spec.name, spec.path, True, len(rows), failed, damaged)


def inspect_run(run_dir: str | Path) -> RunInspection:
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    store = open_run_dir(root)
    report = RunInspection(root, dict.fromkeys(STAGES), running_pid=store.lock_holder())
    for stage in STAGES:
        try:
            report.stages[stage] = store.read_marker(stage)
        except DamagedMarker as err:
            report.damaged[stage] = str(err)
    report.artifacts += [_row_log(spec) for spec in store.row_logs()]
    report.artifacts += [Artifact(name, path, path.exists()) for name, path in store.folders()]
    for _name, folder in student_folders(store, finished=False):
        report.students[folder.root] = [s for s in STAGES if folder.marker(s) is None]
    return report


def _stage_details(marker: dict[str, Any]) -> str:
    """The marker's stats in one line (per-teacher dicts summed)."""
    parts = []
    for key, value in marker.items():
        if key in {"stage", "fingerprint", "finished_at", "inputs", "outputs"}:
            continue
        if key == "share_novel":
            if value is not None:
                parts.append(f"{value:.0%} novel (unlike the calibration prompts)")
        elif key == "active" and isinstance(value, list):
            added = sum(len(r["added"]) for r in value)
            parts.append(f"active calibration: {len(value)} rounds, {added} prompts added")
        elif key == "metrics" and isinstance(value, dict) and "test" in value:
            parts.append(f"test top-1 {value['test']['top1']:.0%}")
        elif key == "teachers" and isinstance(value, dict):
            generated = sum(v.get("generated", 0) for v in value.values())
            errors = sum(v.get("errors", 0) for v in value.values())
            parts.append(f"{generated} generated, {errors} errors")
        elif isinstance(value, dict):
            parts.append(f"{key} " + ", ".join(f"{k}={v}" for k, v in value.items()))
        elif not isinstance(value, list):
            parts.append(f"{key} {value}")
    return "; ".join(parts)


def _relative(path: Path, root: Path) -> str:
    # artifact paths are resolved, RUN_DIR may be given relative; a student's folder of a
    # run with several students reads the shared ones from the folder two levels up
    return os.path.relpath(path, root.resolve())


def print_inspection(report: RunInspection, console: Console) -> None:
    stages = Table(title=f"stages of {report.run_dir}", title_justify="left")
    for col in ("stage", "status", "finished", "details"):
        stages.add_column(col)
    for stage, marker in report.stages.items():
        if stage in report.damaged:
            stages.add_row(stage, "[red]damaged", "", escape(report.damaged[stage]))
            continue
        if marker is None:
            stages.add_row(stage, "[yellow]not done", "", "")
            continue
        finished = dt.datetime.fromtimestamp(marker["finished_at"]).strftime("%Y-%m-%d %H:%M:%S")
        stages.add_row(stage, "[green]done", finished, _stage_details(marker))
    console.print(stages)
    artifacts = Table(title=f"artifacts (paths relative to {report.run_dir})", title_justify="left")
    for col, justify in (
        ("artifact", "left"),
        ("rows", "right"),
        ("errors", "right"),
        ("path", "left"),
    ):
        artifacts.add_column(col, justify=justify)  # type: ignore[arg-type]
    for a in report.artifacts:
        if not a.exists:
            artifacts.add_row(a.name, "[dim]missing", "", _relative(a.path, report.run_dir))
        elif a.rows is None:
            artifacts.add_row(a.name, "", "", _relative(a.path, report.run_dir))
        else:
            errors = f"[red]{a.errors}" if a.errors else "0"
            if a.damaged:
                errors += f" [red]+{a.damaged} damaged lines"
            artifacts.add_row(a.name, str(a.rows), errors, _relative(a.path, report.run_dir))
    console.print(artifacts)
    todo = [s for s in STAGES if s not in report.done]
    for folder, left in report.students.items():
        done = f"not done: {', '.join(left)}" if left else "all stages done"
        console.print(f"student {folder.name} ({folder}): {done}")
    if report.students:  # the other stages are the students' own
        todo = [s for s in todo if s in SHARED_STAGES]
    if report.running_pid is not None:
        # Rows are still being written: the counts above are a snapshot, not a failure.
        console.print(
            f"in progress (pid {report.running_pid}): "
            + (f"not done yet: {', '.join(todo)}" if todo else "all stages done, finishing")
        )
    elif not todo:
        console.print("all stages done")
    else:
        console.print(
            f"not done: {', '.join(todo)} (persyn run CONFIG --run-dir {report.run_dir} resumes)"
        )

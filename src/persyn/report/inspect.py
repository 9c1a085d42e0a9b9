"""`persyn inspect RUN_DIR`: which stages are done, how many rows and errors, where things are.

Read-only: row logs are read as they are (a torn last line from a killed job is ignored,
not repaired), so inspecting a run that is still being written is safe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from persyn.artifacts import RowLogSpec, RunArtifacts
from persyn.pipeline import STAGES
from persyn.store import iter_jsonl


@dataclass
class Artifact:
    """One artifact: where it is and, for row logs, its rows (latest per key) and errors."""

    name: str
    path: Path
    exists: bool
    rows: int | None = None
    errors: int | None = None


@dataclass
class RunInspection:
    run_dir: Path
    stages: dict[str, dict[str, Any] | None]  # stage -> completion marker, None if not done
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def done(self) -> list[str]:
        return [s for s, marker in self.stages.items() if marker is not None]


def _latest_rows(path: Path, key_fields: tuple[str, ...]) -> list[dict[str, Any]]:
    # Reruns append: the last row for a key is the one that counts (as in RowLog).
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in iter_jsonl(path, tolerate_torn_tail=True):
        rows[tuple(row.get(k) for k in key_fields)] = row
    return list(rows.values())


def _row_log(spec: RowLogSpec) -> Artifact:
    if not spec.path.exists():
        return Artifact(spec.name, spec.path, exists=False)
    rows = _latest_rows(spec.path, spec.key_fields)
    return Artifact(spec.name, spec.path, True, len(rows), sum(1 for r in rows if spec.failed(r)))


def inspect_run(run_dir: str | Path) -> RunInspection:
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    store = RunArtifacts(root)
    report = RunInspection(root, {stage: store.marker(stage) for stage in STAGES})
    report.artifacts += [_row_log(spec) for spec in store.row_logs()]
    report.artifacts += [Artifact(name, path, path.exists()) for name, path in store.folders()]
    return report


def _stage_details(marker: dict[str, Any]) -> str:
    """The marker's stats in one line (per-teacher dicts summed)."""
    parts = []
    for key, value in marker.items():
        if key in {"stage", "fingerprint", "finished_at"}:
            continue
        if key == "metrics" and isinstance(value, dict) and "val" in value:
            parts.append(f"held-out top-1 {value['val']['top1']:.0%}")
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
    return str(path.relative_to(root))


def print_inspection(report: RunInspection, console: Console) -> None:
    stages = Table(title=f"stages of {report.run_dir}", title_justify="left")
    for col in ("stage", "status", "finished", "details"):
        stages.add_column(col)
    for stage, marker in report.stages.items():
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
            artifacts.add_row(a.name, str(a.rows), errors, _relative(a.path, report.run_dir))
    console.print(artifacts)
    todo = [s for s in STAGES if s not in report.done]
    console.print(
        "all stages done"
        if not todo
        else f"not done: {', '.join(todo)} (persyn run CONFIG --run-dir {report.run_dir} resumes)"
    )

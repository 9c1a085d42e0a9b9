"""A teacher added to (or removed from) a finished run: only the new teacher answers the
calibration set, only its answers are scored, the router retrains, prompts are re-routed,
and only the prompts whose teacher changed are generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import tiny_run_config

from persyn.config import parse_config
from persyn.pipeline import run_pipeline
from persyn.store import read_jsonl

POOL = ("solver-verbose", "solver-quick")
ADDED = "solver-concise"


def stage(run_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((run_dir / "stages" / f"{name}.json").read_text())


def answered(run_dir: Path) -> set[tuple[str, str]]:
    """(teacher, prompt id) of every generation row."""
    return {
        (path.stem, row["prompt_id"])
        for path in (run_dir / "generations").glob("*.jsonl")
        for row in read_jsonl(path)
    }


def routes(run_dir: Path) -> dict[str, str]:
    return {r["prompt_id"]: r["teacher"] for r in read_jsonl(run_dir / "routes.jsonl")}


def scored(run_dir: Path) -> int:
    return len((run_dir / "scores" / "learnability.jsonl").read_text().splitlines())


def with_pool(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    teachers = [{"name": n, "backend": "scripted", "model": n} for n in names]
    return {**data, "teachers": teachers}


def test_add_then_remove_a_teacher(tiny_lm_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    data = tiny_run_config(tiny_lm_dir, run_dir, store="none")  # the run's own rows only
    run_pipeline(parse_config(with_pool(data, POOL)))
    calibration = json.loads((run_dir / "calibration.json").read_text())["calibration"]
    rows_before, routes_before, scored_before = answered(run_dir), routes(run_dir), scored(run_dir)
    trained_at = stage(run_dir, "train-router")["finished_at"]

    run_pipeline(parse_config(with_pool(data, (*POOL, ADDED))))
    calibrated = {t: s["generated"] for t, s in stage(run_dir, "calibrate")["teachers"].items()}
    assert calibrated == {"solver-verbose": 0, "solver-quick": 0, ADDED: len(calibration)}
    assert scored(run_dir) - scored_before == len(calibration)  # only the new answers
    routes_after = routes(run_dir)
    changed = {pid for pid, t in routes_after.items() if routes_before[pid] != t}
    assert changed, "the added teacher wins some prompts (else this test proves nothing)"
    new_rows = answered(run_dir) - rows_before
    routed_new = {(t, pid) for t, pid in new_rows if pid not in calibration}
    # every routed generation is a prompt whose teacher changed, answered by its new teacher
    assert routed_new == {(routes_after[pid], pid) for pid in changed}
    generated = stage(run_dir, "generate")["teachers"]
    assert sum(t["generated"] for t in generated.values()) == len(changed)
    assert stage(run_dir, "train-router")["finished_at"] > trained_at  # retrained

    # removed again: nobody answers calibration prompts, the prompts the removed teacher
    # had go back to a teacher that answered them before, so nothing is generated
    rows_mid = answered(run_dir)
    run_pipeline(parse_config(with_pool(data, POOL)))
    assert all(s["generated"] == 0 for s in stage(run_dir, "calibrate")["teachers"].values())
    assert ADDED not in routes(run_dir).values()
    new_rows = answered(run_dir) - rows_mid
    regenerated = {pid for _, pid in new_rows}
    moved = {pid for pid, t in routes(run_dir).items() if routes_after[pid] != t}
    assert regenerated <= moved
    assert sum(t["generated"] for t in stage(run_dir, "generate")["teachers"].values()) == len(
        new_rows
    )

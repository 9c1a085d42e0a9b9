"""Row logs are trusted only while their content checks out (issue 24.3): a row edited by
hand (its checksum no longer matches) or holding an impossible value is dropped with a
warning naming the file and line, and recomputed; rows written before checksums load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_reliability import finished_run, make_config, persyn, save

from persyn.artifacts.rows import (
    check_generation_row,
    check_learnability_row,
    check_quality_row,
)
from persyn.store import CHECKSUM, ImpossibleRow, RowLog, row_checksum


@pytest.fixture(scope="module")
def finished(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tiny_lm_dir, tmp_path_factory.mktemp("row-trust"), 16)


@pytest.fixture
def run(finished: Path, tiny_lm_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A copy of the finished run: (config file, run directory)."""
    shutil.copytree(finished / "run", tmp_path / "run")
    yield (
        save(make_config(tiny_lm_dir, tmp_path, finished / "prompts.jsonl"), tmp_path),
        (tmp_path / "run"),
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_an_edited_generation_text_is_regenerated_and_exported(run: tuple[Path, Path]) -> None:
    config, run_dir = run
    dataset = {r["id"]: r for r in lines(run_dir / "dataset.jsonl")}
    routed = next(r for r in dataset.values() if r["selected_by"] == "router")
    log = run_dir / "generations" / f"{routed['teacher']}.jsonl"
    rows = lines(log)
    at = next(i for i, r in enumerate(rows) if r["prompt_id"] == routed["id"])
    rows[at]["text"] = "EDITED BY HAND"  # the checksum is left as it was
    rewrite(log, rows)

    code, output = persyn("run", str(config), "--quiet")
    assert code == 0, output
    assert f"warning: {log}: line {at + 1} edited since it was written" in output
    exported = {r["id"]: r for r in lines(run_dir / "dataset.jsonl")}[routed["id"]]
    assert exported["messages"][-1]["content"] == routed["messages"][-1]["content"]
    assert "EDITED BY HAND" not in (run_dir / "dataset.jsonl").read_text()
    code, output = persyn("run", str(config), "--quiet")
    assert code == 0 and not warnings(output), output  # repaired for good


@pytest.mark.parametrize("keep_checksum", [True, False], ids=["resummed", "old-format"])
def test_an_impossible_learnability_is_recomputed(
    run: tuple[Path, Path], keep_checksum: bool
) -> None:
    """A positive mean log-likelihood: refused even with a matching checksum (recomputed by
    whoever edited it) or none (a row from before checksums)."""
    config, run_dir = run
    rewards_before = (run_dir / "rewards.jsonl").read_bytes()
    log = run_dir / "scores" / "learnability.jsonl"
    rows = lines(log)
    original = rows[2]["learnability"]
    edited = {k: v for k, v in rows[2].items() if k != CHECKSUM} | {"learnability": 0.5}
    if keep_checksum:
        edited[CHECKSUM] = row_checksum(edited)
    rows[2] = edited
    rewrite(log, rows)

    code, output = persyn("run", str(config), "--quiet")
    assert code == 0, output
    assert (
        f"warning: {log}: line 3 impossible value: learnability: 0.5 is outside "
        "[-inf, 0] (mean_logprob); dropped, 1 row(s) will be recomputed"
    ) in output
    again = [r for r in lines(log) if r["prompt_id"] == edited["prompt_id"]]
    again = [r for r in again if r["teacher"] == edited["teacher"]]
    assert [r["learnability"] for r in again] == [pytest.approx(original, abs=1e-5)]
    assert (run_dir / "rewards.jsonl").read_bytes() == rewards_before  # the oracle holds


def test_rows_from_before_checksums_load_as_they_are(run: tuple[Path, Path]) -> None:
    config, run_dir = run
    logs = [*run_dir.glob("generations/*.jsonl"), *run_dir.glob("scores/*.jsonl")]
    for log in logs:
        rewrite(log, [{k: v for k, v in r.items() if k != CHECKSUM} for r in lines(log)])
    sizes = {log: len(lines(log)) for log in logs}
    dataset = (run_dir / "dataset.jsonl").read_bytes()

    code, output = persyn("run", str(config), "--quiet")
    assert code == 0 and not warnings(output), output
    assert {log: len(lines(log)) for log in logs} == sizes  # nothing recomputed
    assert (run_dir / "dataset.jsonl").read_bytes() == dataset


def test_checks_refuse_impossible_rows_and_accept_failed_ones(tmp_path: Path) -> None:
    failed = {"prompt_id": "a", "fp": "x", "text": None, "error": "timeout"}
    check_generation_row(failed)  # a failed answer has no text: fine
    check_generation_row({**failed, "text": "", "error": "empty response"})
    with pytest.raises(ImpossibleRow, match="text: missing or empty"):
        check_generation_row({**failed, "text": "  ", "error": None})
    with pytest.raises(ImpossibleRow, match="completion_tokens: -3 is negative"):
        check_generation_row({**failed, "completion_tokens": -3})
    with pytest.raises(ImpossibleRow, match="learnability: nan is not a finite number"):
        check_learnability_row({"learnability": float("nan"), "error": None})
    check_quality_row({"quality": None, "signals": {"math": None}, "error": "judge: timeout"})
    with pytest.raises(ImpossibleRow, match=r"signals.math: 1.5 is outside \[0, 1\]"):
        check_quality_row({"quality": 1.0, "signals": {"math": 1.5}, "error": None})

    path = tmp_path / "log.jsonl"
    log = RowLog(path, ("prompt_id", "fp"), check_generation_row)
    log.append([failed, {**failed, "prompt_id": "b", "text": "4", "error": None}])
    assert all(CHECKSUM in json.loads(line) for line in path.read_text().splitlines())
    again = RowLog(path, ("prompt_id", "fp"), check_generation_row)
    assert again.rows == log.rows and CHECKSUM not in again.get(("b", "x"))

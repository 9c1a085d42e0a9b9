"""`persyn inspect`: stages, rows and errors of a half-finished real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.cli import app
from persyn.config import parse_config
from persyn.pipeline import Run, run_stage
from persyn.report.inspect import inspect_run


@pytest.fixture(scope="module")
def run_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stopped after train-router, with one failed generation and a torn last line, as a
    retried backend error and a killed job leave them."""
    root = tmp_path_factory.mktemp("inspect-run")
    config = tiny_run_config(tiny_lm_dir, root / "run")
    # Greedy, the random tiny LM repeats a newline (an empty answer); sampling gives text.
    config["teachers"][0]["generation"] = {"max_new_tokens": 8, "temperature": 1.0}
    run_stage(Run.open(parse_config(config)), "train-router")
    log = root / "run" / "generations" / "solver-quick.jsonl"
    failed = {
        "prompt_id": "never-answered",
        "teacher": "solver-quick",
        "fp": "x",
        "text": "",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "error": "HTTP 503",
    }
    with log.open("a") as f:
        f.write(json.dumps(failed) + "\n" + '{"prompt_id": "torn')
    return root / "run"


def test_stages_done_and_not_done(run_dir: Path) -> None:
    found = inspect_run(run_dir)
    assert found.done == ["prepare", "calibrate", "tune", "score", "train-router"]
    assert found.stages["route"] is None


def test_rows_and_errors(run_dir: Path) -> None:
    before = (run_dir / "generations" / "solver-quick.jsonl").read_bytes()
    artifacts = {a.name: a for a in inspect_run(run_dir).artifacts}
    split = json.loads((run_dir / "calibration.json").read_text())
    n_cal = len(split["calibration"])
    quick = artifacts["generations/solver-quick"]
    assert (quick.rows, quick.errors) == (n_cal + 1, 1)
    assert artifacts["generations/tiny-llm"].rows == n_cal
    assert artifacts["prompts"].rows == 30
    assert artifacts["rewards"].rows == n_cal
    assert not artifacts["routes"].exists and not artifacts["dataset card"].exists
    assert artifacts["router"].exists
    # Read-only: the torn line is skipped, not repaired.
    assert (run_dir / "generations" / "solver-quick.jsonl").read_bytes() == before


def test_cli_inspect(run_dir: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "generations/solver-quick" in result.output
    assert "not done: route, generate, export" in result.output
    missing = CliRunner().invoke(app, ["inspect", str(run_dir / "nope")])
    assert missing.exit_code == 2

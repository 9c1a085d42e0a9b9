"""The full offline demo (about 8.5 minutes on 2 CPU cores): issue 10's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PERSYN = str(Path(sys.executable).parent / "persyn")


@pytest.mark.slow
def test_demo_numbers(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    done = subprocess.run(
        [PERSYN, "demo", "--run-dir", str(run_dir), "--quiet"],
        env={**os.environ, "COLUMNS": "200"},  # no wrapped table headers
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert json.loads((run_dir / "demo_summary.json").read_text()) == summary
    # every prompt is in the dataset or counted as failed, with reasons
    assert summary["dataset_rows"] + summary["failed_rows"] == summary["prompts"] == 400
    assert summary["failed_rows"] == sum(summary["failed_reasons"].values())
    # the choice of teacher matters: no teacher takes more than ~70% of calibration prompts
    shares = summary["oracle_share"]
    assert max(shares.values()) <= 0.7, shares
    assert sum(s > 0.05 for s in shares.values()) >= 3, shares
    # the router beats the best single teacher and random on its test split (calibration
    # prompts used neither for training nor for picking the epoch)
    held = summary["router_test"]
    assert held["prompts"] == 50
    assert held["reward"] > held["best_fixed_reward"], held
    assert held["reward"] > held["random_reward"], held
    assert held["best_fixed_teacher_name"] in shares
    # Route then Generate: calibration x teachers + one per routed prompt
    assert summary["generations"] == 200 * 5 + 200
    assert summary["generate_then_select_generations"] == 400 * 5
    # and all of it is printed at the end
    out = done.stdout
    for text in (
        "oracle share",
        "top-1 agreement",
        "best single teacher",
        "random",
        "Generate-then-Select",
        "most frequent oracle teacher",
    ):
        assert text in out, text

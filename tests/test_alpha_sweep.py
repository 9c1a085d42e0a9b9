"""Alpha sweeps re-mix cached scores: one rewards file per alpha, no model call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.cli import app
from persyn.config import load_config
from persyn.pipeline import Run, run_stage
from persyn.stages.score import alpha_sweep
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt


def strict_judge(prompt: Prompt) -> str:
    """Grades answers that show their working (an `=`); any other gets a reply with no grade."""
    answer = prompt.messages[-1]["content"].split("[Answer to grade]")[1]
    return "Score: 8" if "=" in answer else "No comment."


def sweep_config(tiny_lm_dir: Path, run_dir: Path) -> dict:
    judge = {"backend": "scripted", "model": "test_alpha_sweep:strict_judge"}
    quality = [
        {"kind": "math"},
        {"kind": "ifeval", "options": {"mode": "loose"}},
        {"kind": "judge", "weight": 0.5, "options": {"teacher": judge, "kinds": ["math"]}},
    ]
    # Half the math answers get no grade on purpose: tolerate those missing rewards.
    return tiny_run_config(tiny_lm_dir, run_dir, rewards={"quality": quality}, max_error_rate=0.5)


@pytest.fixture(scope="module")
def config_file(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run scored once (the model calls), shared by the sweeps below."""
    folder = tmp_path_factory.mktemp("sweep")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(sweep_config(tiny_lm_dir, folder / "run")))
    run_stage(Run.open(load_config(config)), "score")
    return config


def test_sweep_recomputes_only_the_mix(config_file: Path) -> None:
    cfg = load_config(config_file)
    run = Run.open(cfg)
    scores = run.store.path("scores")
    files = {p.name: (p.stat().st_mtime_ns, len(read_jsonl(p))) for p in scores.iterdir()}
    assert set(files) == {"learnability.jsonl", "quality.jsonl"}

    shares = alpha_sweep(run, [0.1, 0.4, 0.7])

    # No model call: the score logs did not grow or change.
    assert {p.name: (p.stat().st_mtime_ns, len(read_jsonl(p))) for p in scores.iterdir()} == files
    assert set(shares) == {"0.1", "0.4", "0.7"}
    for row in shares.values():
        assert sum(row.values()) <= 1 + 1e-9 and set(row) == set(cfg.teacher_names)
    main = read_jsonl(run.store.path("rewards.jsonl"))
    assert read_jsonl(run.store.path("rewards_alpha0.4.jsonl")) == main  # config alpha 0.4
    low = read_jsonl(run.store.path("rewards_alpha0.1.jsonl"))
    assert [r["quality"] for r in low] == [r["quality"] for r in main]
    assert [r["reward"] for r in low] != [r["reward"] for r in main]
    table = run.store.path("alpha_sweep.md").read_text()
    assert "| alpha | tiny-llm | solver-verbose" in table and "| 0.7 |" in table
    assert json.loads(run.store.path("alpha_sweep.json").read_text())["oracle_share"] == shares

    # A judge reply with no grade is kept with its reason; that response gets no reward.
    quality_rows = read_jsonl(scores / "quality.jsonl")
    failed = [q for q in quality_rows if q["error"]]
    assert failed and all("judge: unparsable judge reply" in q["error"] for q in failed)
    by_prompt = {r["prompt_id"]: r for r in main}
    names = cfg.teacher_names
    for q in failed:
        assert by_prompt[q["prompt_id"]]["reward"][names.index(q["teacher"])] is None


def test_cli_alpha_option(config_file: Path) -> None:
    config, run_dir = config_file, config_file.parent / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(config), "--alpha", "0,1", "-q"])
    assert result.exit_code == 0, result.output
    assert "| alpha |" in result.output
    assert (run_dir / "rewards_alpha0.jsonl").exists()
    assert (run_dir / "rewards_alpha1.jsonl").exists()
    bad = runner.invoke(app, ["score", str(config), "--alpha", "0.1,high"])
    assert bad.exit_code == 2 and "--alpha '0.1,high'" in bad.output
    out_of_range = runner.invoke(app, ["score", str(config), "--alpha", "1.5"])
    assert out_of_range.exit_code == 2 and "alpha must be in [0, 1]" in out_of_range.output

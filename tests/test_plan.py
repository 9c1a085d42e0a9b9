"""`persyn plan`: generations, tokens, money and time of Route then Generate against
Generate then Select, before a run (no model call), from a pilot (answers cached and
reused by the run), and from a finished run's routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_spend import CALLS, PRICES, spend_config
from test_tune import tune_config
from typer.testing import CliRunner

from persyn.cli import app, demo_config_path
from persyn.config import load_config, parse_config
from persyn.pipeline import Run, run_pipeline, run_stage
from persyn.plan import plan, plan_lines


def test_demo_plan_calls_no_model_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    run_dir = tmp_path / "run"
    args = ["plan", str(demo_config_path()), "--run-dir", str(run_dir), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-cost", "0"])
    assert result.exit_code == 0, result.output
    assert "no model was called" in result.output
    assert "max_cost 0 covers both estimates" in result.output  # the demo's prices are 0
    assert "Generate then Select" in result.output and "unknown before a router" in result.output
    assert not run_dir.exists()  # nothing prepared, nothing asked
    estimate = json.loads(out.read_text())
    cfg = load_config(demo_config_path())
    limits = {t.name: t.generation.max_new_tokens for t in cfg.teachers}
    assert estimate["estimate"] is True
    assert (estimate["spent"], estimate["max_cost"]) == (0, 0)
    assert (estimate["prompts"], estimate["calibration_prompts"]) == (400, 200)
    assert estimate["routed_prompts"] == 200
    for name, t in estimate["teachers"].items():  # no answers measured: the bound
        assert t["completion_tokens"] == limits[name]
        assert t["completion_tokens_from"] == "max_new_tokens (upper bound)"
        assert t["seconds"] is None
    gts = estimate["generate_then_select"]
    assert gts["generations"] == 400 * 5
    assert gts["completion_tokens"] == 400 * sum(limits.values())
    assert gts["wall_s"] is None  # nothing timed: unknown, not guessed
    rtg = estimate["route_then_generate"]
    assert rtg["routed_shares"] is None
    assert rtg["calibration"]["completion_tokens"] == 200 * sum(limits.values())
    low, high = rtg["total"]["low"], rtg["total"]["high"]
    assert low["generations"] == high["generations"] == 200 * 5 + 200
    assert low["completion_tokens"] == 200 * sum(limits.values()) + 200 * min(limits.values())
    assert high["completion_tokens"] == 200 * sum(limits.values()) + 200 * max(limits.values())


def test_pilot_measures_and_the_run_reuses_its_answers(tiny_lm_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = parse_config(spend_config(tiny_lm_dir, run_dir, routing={"expected_tokens": {"c": 9}}))
    CALLS.clear()
    estimate = plan(cfg, pilot=3)
    assert sum(CALLS.values()) == 3 * 3
    teachers = estimate["teachers"]
    assert {t: teachers[t]["completion_tokens"] for t in PRICES} == {"a": 6, "b": 4, "c": 9}
    assert teachers["a"]["completion_tokens_from"] == "measured (3 answers)"
    assert teachers["c"]["completion_tokens_from"] == "routing.expected_tokens"
    assert all(teachers[t]["seconds"] is not None for t in PRICES)
    # the pilot's answers are paid for: 6, 4 and 5 words each
    assert estimate["spent"] == pytest.approx(3 * (6 * 2.0 + 4 * 1.0 + 5 * 0.5) / 1000)
    per_answer = {"a": 6 * 2.0 / 1000, "b": 4 * 1.0 / 1000, "c": 9 * 0.5 / 1000}
    gts = estimate["generate_then_select"]
    assert gts["cost"] == pytest.approx(24 * sum(per_answer.values()))
    assert gts["wall_s"] == pytest.approx(24 * sum(teachers[t]["seconds"] for t in PRICES))
    rtg = estimate["route_then_generate"]
    assert rtg["routed"]["low"]["cost"] == pytest.approx(12 * per_answer["b"])
    assert rtg["routed"]["high"]["cost"] == pytest.approx(12 * per_answer["a"])

    run_pipeline(cfg)  # the pilot's answers are not asked again
    assert set(CALLS.values()) == {1} and sum(CALLS.values()) == 3 * 12 + 12
    after = plan(cfg)  # a finished run: its routes give the shares, its answers the tokens
    rtg = after["route_then_generate"]
    assert rtg["routed"]["low"] == rtg["routed"]["high"]
    assert sum(rtg["routed_shares"].values()) == pytest.approx(1)
    assert after["teachers"]["a"]["completion_tokens_from"] == "measured (12 answers)"


def test_alpha_auto_plans_the_tune_too(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Under `rewards.alpha: auto` the plan holds the tune's lines (`persyn tune
    --dry-run`'s): before anything ran, and after its pilot trained (done, nothing left)."""
    data = tune_config(tiny_lm_dir, tmp_path / "run")
    data["tune"].update(alphas=[0.4], max_rows=4)
    cfg = parse_config(data)
    before = plan(cfg)
    assert not (tmp_path / "run").exists()
    text = "\n".join(plan_lines(before))
    assert "tune: 1 reward settings (alpha0.4-mean_logprob;" in text
    assert "new teacher generations: 0" in text and "pilots: 0 done" in text
    assert "time: not estimated" in text
    run_stage(Run.open(cfg), "tune")
    after = plan(cfg)["tune"]
    assert "  pilots: 1 done (stored by fingerprint: they cost nothing again), 0 to train" in after
    assert "  time: none left: every pilot is done" in after
    explicit = parse_config(tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4))
    assert plan(explicit)["tune"] is None  # no tune in a run with its own alpha

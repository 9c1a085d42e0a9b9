"""Baseline datasets: choices from calibration statistics, answers through the run's cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_run_config

from persyn.artifacts import RewardTable, RunArtifacts
from persyn.config import ConfigError, parse_config
from persyn.eval.baselines import (
    BASELINES,
    BaselineContext,
    build_dataset,
    car,
    car_scores,
    mean_quality,
    strong,
)
from persyn.executors import LocalExecutor
from persyn.method import combine
from persyn.pipeline import Run, run_pipeline
from persyn.store import read_jsonl


@pytest.fixture(scope="module")
def tiny_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A finished tiny run; the student and its LLM teacher share the family `tiny`."""
    data = tiny_run_config(tiny_lm_dir, tmp_path_factory.mktemp("baselines") / "run")
    data["student"]["family"] = "tiny"
    data["teachers"][0]["family"] = "tiny"
    cfg = parse_config(data)
    run_pipeline(cfg)
    return Run.open(cfg)


def _ctx(run: Run, ids: list[str] | None = None, **options: object) -> BaselineContext:
    return BaselineContext(
        run, ids or [p.id for p in run.prompts], run.cfg.experiment.model_copy(update=options)
    )


def _generation_rows(run: Run) -> int:
    return sum(
        len(run.store.path("generations", f"{t}.jsonl").read_text().splitlines())
        for t in run.cfg.teacher_names
    )


def test_registry_names_every_baseline():
    assert list(BASELINES) == [
        "persyn",
        "strong",
        "family-strong",
        "mix",
        "car",
        "random",
        "oracle",
        "quality-only",
        "learnability-only",
        "persyn-tuned",
    ]


def test_car_trades_quality_for_student_compatibility(tiny_lm_dir: Path, tmp_path: Path):
    """Teacher a: always right but hard for the student; b: right 60%, easy to learn."""
    cfg = parse_config(tiny_run_config(tiny_lm_dir, tmp_path / "run"))
    run = Run(cfg, RunArtifacts(tmp_path / "run"), LocalExecutor())
    quality = np.array([[1.0, 1.0 if i < 3 else 0.0, 0.0, 0.0] for i in range(5)])
    learnability = np.tile([-3.0, -0.5, -1.0, -1.0], (5, 1))
    ids, names = [f"p{i}" for i in range(5)], cfg.teacher_names
    reward = np.full_like(quality, np.nan)  # CAR reads only the raw scores
    run.store.write_rewards(RewardTable(ids, names, learnability, quality, reward, [None] * 5))
    run.store.write_rewards_meta(names, cfg.rewards.alpha, cfg.rewards.normalization)
    scores = car_scores(run, beta=1.0)
    assert scores["tiny-llm"] == pytest.approx(1.0 / (1 + 3.0))
    assert scores["solver-verbose"] == pytest.approx(0.6 / (1 + 0.5))
    ids = ["p0", "p1"]
    assert set(car(_ctx(run, ids, car_beta=1.0)).values()) == {"solver-verbose"}
    assert set(strong(_ctx(run, ids)).values()) == {"tiny-llm"}
    # With beta 0 CAR is plain mean quality, the Strong baseline.
    assert set(car(_ctx(run, ids, car_beta=0.0)).values()) == {"tiny-llm"}


def test_single_teacher_baselines(tiny_run: Run):
    ctx = _ctx(tiny_run)
    # Both always-right solvers tie on quality; the first listed wins.
    assert set(BASELINES["strong"](ctx).values()) == {"solver-verbose"}
    assert set(BASELINES["family-strong"](ctx).values()) == {"tiny-llm"}
    # The random-weight LLM teacher never satisfies anything: it is the weakest.
    quality = mean_quality(tiny_run)
    assert min(quality, key=quality.__getitem__) == "tiny-llm"
    assert set(BASELINES["mix"](ctx).values()) == {"solver-verbose", "tiny-llm"}
    assert BASELINES["random"](ctx) == BASELINES["random"](ctx)  # seeded
    assert len(set(BASELINES["random"](ctx).values())) > 2


def test_family_strong_without_family_names_the_fix(tiny_run: Run):
    run = Run(tiny_run.cfg.model_copy(deep=True), tiny_run.store, tiny_run.executor)
    run.cfg.student.family = "qwen"
    with pytest.raises(
        ConfigError, match=r"family-strong: no teacher has the student's family 'qwen'"
    ):
        BASELINES["family-strong"](_ctx(run))


def test_datasets_are_built_through_the_generation_cache(tiny_run: Run):
    ctx = _ctx(tiny_run)
    rows = build_dataset("strong", ctx)
    assert len(rows) == len(ctx.prompt_ids)
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    before = _generation_rows(tiny_run)
    assert build_dataset("strong", ctx) == rows
    assert _generation_rows(tiny_run) == before  # nothing generated twice


def test_oracle_keeps_the_best_combined_reward_of_every_prompt(tiny_run: Run):
    from persyn.stages.score import score_responses

    ctx = _ctx(tiny_run)
    choice = BASELINES["oracle"](ctx)
    learnability, quality, scored = score_responses(tiny_run, ctx.prompt_ids)
    assert scored == 0  # every score was cached by the oracle itself
    reward = combine(quality, learnability, tiny_run.cfg.rewards.alpha, "minmax")
    names = tiny_run.cfg.teacher_names
    for i, pid in enumerate(ctx.prompt_ids):
        assert reward[i, names.index(choice[pid])] == np.nanmax(reward[i])
    # On the calibration prompts it is the `score` stage's own oracle (rewards.jsonl),
    # which it once missed by taking learnability for quality.
    calibration = read_jsonl(tiny_run.store.rewards_path())
    assert calibration and all(choice[r["prompt_id"]] == r["oracle"] for r in calibration)


def test_persyn_and_its_alpha_ablations(tiny_run: Run):
    ctx = _ctx(tiny_run)
    exported = {r["id"]: r["teacher"] for r in read_jsonl(tiny_run.store.path("dataset.jsonl"))}
    assert BASELINES["persyn"](ctx) == exported
    quality_only = BASELINES["quality-only"](ctx)
    sibling = tiny_run.store.root.parent / "run-alpha0"
    assert json.loads((sibling / "rewards_meta.json").read_text())["alpha"] == 0.0
    assert set(quality_only) == set(ctx.prompt_ids)
    # The sibling shares the row logs: the same file under two names.
    log = Path("generations") / "solver-verbose.jsonl"
    assert (sibling / log).stat().st_ino == (tiny_run.store.root / log).stat().st_ino


def test_unknown_dataset_is_a_config_error(tiny_run: Run):
    with pytest.raises(ConfigError, match=r"experiment\.datasets: unknown dataset 'best'"):
        build_dataset("best", _ctx(tiny_run))


def _table_run(tiny_lm_dir: Path, tmp_path: Path, quality: np.ndarray, failed: np.ndarray) -> Run:
    """A run whose reward table is `quality` (learnability constant) with `failed` answers;
    its last teacher, `solver-quick`, is known from imported answers only."""
    cfg = parse_config(tiny_run_config(tiny_lm_dir, tmp_path / "run"))
    cfg.teachers[3] = cfg.teachers[3].model_copy(update={"backend": "imported"})
    run = Run(cfg, RunArtifacts(tmp_path / "run"), LocalExecutor())
    ids, names = [f"p{i}" for i in range(len(quality))], cfg.teacher_names
    learnability = np.full_like(quality, -1.0)
    reward = np.full_like(quality, np.nan)
    table = RewardTable(ids, names, learnability, quality, reward, [None] * len(ids), failed)
    run.store.write_rewards(table)
    run.store.write_rewards_meta(names, cfg.rewards.alpha, cfg.rewards.normalization)
    return run


def test_strong_charges_failures_and_only_teachers_that_generate_are_chosen(
    tiny_lm_dir: Path, tmp_path: Path
):
    """tiny-llm is right whenever it answers but fails 3 times in 5; solver-verbose is right
    4 times in 5; solver-quick (imported only) is always right but cannot generate."""
    nan = np.nan
    quality = np.array([[1.0, 1.0, 0.0, 1.0]] * 2 + [[nan, 1.0, 0.0, 1.0]] * 2 + [[nan, 0, 0, 1]])
    failed = np.zeros_like(quality, dtype=bool)
    failed[2:, 0] = True
    run = _table_run(tiny_lm_dir, tmp_path, quality, failed)
    quality_means = mean_quality(run)
    assert quality_means == pytest.approx(
        {"tiny-llm": 0.4, "solver-verbose": 0.8, "solver-concise": 0.0}
    )
    ids = [f"q{i}" for i in range(2000)]
    assert set(strong(_ctx(run, ids)).values()) == {"solver-verbose"}
    assert "solver-quick" not in car_scores(run, beta=1.0)
    assert "solver-quick" not in set(BASELINES["random"](_ctx(run, ids)).values())
    # Mix: the strongest for a `mix_strong_share` of prompts (default 1:4), else the weakest
    mixed = list(BASELINES["mix"](_ctx(run, ids)).values())
    assert set(mixed) == {"solver-verbose", "solver-concise"}
    assert mixed.count("solver-verbose") / len(ids) == pytest.approx(0.2, abs=0.03)
    half = list(BASELINES["mix"](_ctx(run, ids, mix_strong_share=0.5)).values())
    assert half.count("solver-verbose") / len(ids) == pytest.approx(0.5, abs=0.03)

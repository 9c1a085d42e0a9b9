"""`persyn experiment`: results table, chart, and a tiny end-to-end run (slow)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_experiment_config, tiny_run_config

from persyn.artifacts import RunArtifacts, Split
from persyn.config import ConfigError, parse_config
from persyn.eval.experiment import (
    BASE_STUDENT,
    add_intervals,
    build_datasets,
    experiment_prompts,
    run_experiment,
    train_and_evaluate,
)
from persyn.eval.results import results_csv, results_markdown, write_results
from persyn.eval.stats import paired_bootstrap, task_mean
from persyn.pipeline import Run
from persyn.store import RunDirBusy
from persyn.teachers.base import Prompt

RESULTS = [
    {
        "dataset": BASE_STUDENT,
        "rows": 0,
        "teachers": "",
        "math_accuracy": 0.1,
        "ifeval_strict": 0.2,
        "ifeval_loose": 0.3,
        "score": 0.15,
    },
    {
        "dataset": "persyn",
        "rows": 8,
        "teachers": "solver-verbose 50% tiny-llm 50%",
        "train_loss": 1.25,
        "train_min": 0.5,
        "math_accuracy": 0.5,
        "ifeval_strict": None,
        "ifeval_loose": None,
        "score": 0.5,
    },
]


def test_results_table_csv_and_chart(tmp_path: Path):
    table = results_markdown(RESULTS)
    lines = table.splitlines()
    assert lines[0].startswith("| dataset | rows | teachers |")
    assert lines[2] == "| student (no SFT) | 0 |  | - | - | 0.100 | 0.200 | 0.300 | 0.150 |"
    assert (
        "| persyn | 8 | solver-verbose 50% tiny-llm 50% | 1.250 | 0.500 | 0.500 | - | - | 0.500 |"
        in lines
    )
    parsed = list(csv.DictReader(io.StringIO(results_csv(RESULTS))))
    assert parsed[1]["score"] == "0.5" and parsed[1]["ifeval_strict"] == ""
    write_results(RESULTS, tmp_path)
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results.md").read_text() == table


def prepared_run(tiny_lm_dir: Path, tmp_path: Path, **experiment: object) -> Run:
    """A run directory with 40 prompts, the first 15 calibration prompts, the rest routed."""
    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", experiment=experiment)
    run = Run(parse_config(data), RunArtifacts(tmp_path / "run"), None)  # type: ignore[arg-type]
    ids = [f"p{i:03d}" for i in range(40)]
    run.store.write_prompts(Prompt(i, [{"role": "user", "content": i}]) for i in ids)
    run.store.write_split(Split(ids[:15], ids[:9], ids[9:12], ids[15:], None, ids[12:15]))
    return run


def test_experiment_prompts_are_not_the_calibration_draw(tiny_lm_dir: Path, tmp_path: Path):
    """`Random(seed).sample(ids, k)` would be a prefix of the calibration draw."""
    import random

    run = prepared_run(tiny_lm_dir, tmp_path, size=10, seed=0)
    routed = run.store.split().routed
    chosen = experiment_prompts(run)
    assert len(chosen) == 10 and chosen == sorted(chosen) and chosen == experiment_prompts(run)
    assert chosen != sorted(random.Random(0).sample(routed, 10))


@pytest.mark.parametrize("size", [10, None, 30])
def test_no_calibration_prompt_trains_a_compared_student(
    tiny_lm_dir: Path, tmp_path: Path, size: int | None
):
    """On a calibration prompt PerSyn's row is the oracle's pick (every teacher answered
    and was scored), which no baseline gets: the datasets are drawn from routed prompts
    only, all of them when `size` asks for more."""
    run = prepared_run(tiny_lm_dir, tmp_path, size=size)
    split = run.store.split()
    chosen = experiment_prompts(run)
    assert set(chosen) <= set(split.routed) and not set(chosen) & set(split.calibration)
    assert len(chosen) == (10 if size == 10 else len(split.routed))


def test_baseline_datasets_wait_for_nobody_else_in_the_run(tiny_lm_dir: Path, tmp_path: Path):
    """Baselines answer and score into the run's logs, so building them takes the run's
    lock: with another process in the run directory it fails at once, writing nothing."""
    import subprocess
    import sys

    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", experiment={"size": 10})
    run = Run(parse_config(data), RunArtifacts(tmp_path / "run"), None)  # type: ignore[arg-type]
    run.store.write_prompts(Prompt(f"p{i}", [{"role": "user", "content": "q"}]) for i in range(20))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "os.write(fd, b'4242'); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
            "time.sleep(60)",
            str(tmp_path / "run" / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match="is in use by persyn"):
            build_datasets(run, tmp_path / "experiment")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "experiment").exists()


def test_paired_bootstrap_finds_a_known_difference():
    """B is right on 60% of 400 prompts, A on the same prompts plus 20% more: the paired
    difference is 0.2 and its interval excludes 0; the unpaired spread would be wider."""
    n = 400
    base = (np.arange(n) % 10 < 6).astype(float)
    better = base.copy()
    better[(np.arange(n) % 10 >= 6) & (np.arange(n) % 10 < 8)] = 1.0
    tasks = np.array(["math"] * n)
    own, diffs = paired_bootstrap({"persyn": base, "a": better}, tasks, "persyn", seed=1)
    assert own["persyn"].estimate == pytest.approx(0.6)
    assert own["persyn"].low < 0.6 < own["persyn"].high
    d = diffs["a"]
    assert d.estimate == pytest.approx(0.2)
    assert 0 < d.low < 0.2 < d.high < 0.3
    assert d.high - d.low < own["a"].high - own["a"].low + own["persyn"].high - own["persyn"].low
    # Seeded: the same draws give the same interval.
    again = paired_bootstrap({"persyn": base, "a": better}, tasks, "persyn", seed=1)[1]["a"]
    assert again == d


def test_paired_bootstrap_of_identical_datasets_is_zero_width():
    rng = np.random.default_rng(0)
    scores = (rng.random(300) < 0.4).astype(float)
    tasks = np.array(["math"] * 300)
    _, diffs = paired_bootstrap({"persyn": scores, "same": scores.copy()}, tasks, "persyn")
    assert (diffs["same"].estimate, diffs["same"].low, diffs["same"].high) == (0.0, 0.0, 0.0)
    assert (diffs["persyn"].low, diffs["persyn"].high) == (0.0, 0.0)


def test_disagreeing_seeds_widen_the_interval():
    """Three seeds' students of one dataset on the same 400 prompts: when they agree, the
    interval is the prompts-only one; when their accuracies differ (0.4, 0.5, 0.6, the same
    mean), resampling the seeds widens it, and the paired difference from a dataset whose
    seeds agree widens too."""
    n = 400
    prompt = np.arange(n) % 10
    tasks = np.array(["math"] * n)
    agreeing = np.stack([(prompt < 5).astype(float)] * 3)
    disagreeing = np.stack([(prompt < k).astype(float) for k in (4, 5, 6)])
    one = paired_bootstrap({"persyn": agreeing[0]}, tasks, "persyn", resamples=2000)[0]
    same, _ = paired_bootstrap({"persyn": agreeing}, tasks, "persyn", resamples=2000)
    # identical seeds: nothing to add
    assert [same["persyn"].low, same["persyn"].high] == pytest.approx(
        [one["persyn"].low, one["persyn"].high]
    )
    own, diffs = paired_bootstrap(
        {"persyn": agreeing, "other": disagreeing}, tasks, "persyn", resamples=2000
    )
    assert own["other"].estimate == pytest.approx(0.5)
    width = {k: v.high - v.low for k, v in own.items()}
    assert width["other"] > 1.5 * width["persyn"]
    assert diffs["other"].estimate == pytest.approx(0.0)
    assert diffs["other"].low < -0.05 and diffs["other"].high > 0.05
    # a seed draw is a real draw: all-low (0.4) and all-high (0.6) resamples both occur
    assert own["other"].low < 0.45 and own["other"].high > 0.55


def test_seeds_in_the_table_and_the_csv():
    rows = [
        {**RESULTS[0], "seed_scores": [0.15]},
        {**RESULTS[1], "seed_scores": [0.4, 0.6], "score_low": 0.3, "score_high": 0.7},
    ]
    lines = results_markdown(rows).splitlines()
    assert "| score per seed |" in lines[0]
    assert "| 0.400 / 0.600 |" in lines[3] and "| 0.150 |" in lines[2]
    assert "resampling the held-out prompts and the 2 training seeds" in lines[-1]
    parsed = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert parsed[1]["score_per_seed"] == "0.400 / 0.600"


def test_each_seed_trains_and_evaluates_its_own_student(tiny_lm_dir: Path, tmp_path: Path):
    """`experiment.seeds`: one student per seed, each evaluated; the row is their mean and
    lists each; the default seed keeps the key a one-seed experiment had, and a rerun
    trains nothing again, even once the student checkpoints are deleted."""
    import json

    from persyn.data import load_prompts
    from persyn.executors import LocalExecutor

    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", experiment={"seeds": [0, 1]})
    data["student_training"] = {
        "batch_size": 2,
        "sft": {"max_steps": 1, "gradient_checkpointing": False},
    }
    data["evaluation"] = {
        "prompts": {"builtin": "demo-mix", "num_prompts": 4, "seed": 7},
        "max_new_tokens": 4,
        "batch_size": 4,
    }
    cfg = parse_config(data)
    chat = [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."},
    ]
    path = tmp_path / "persyn.jsonl"
    path.write_text((json.dumps({"messages": chat, "teacher": "t"}) + "\n") * 2)
    held_out = load_prompts(cfg.evaluation.prompts)
    out = tmp_path / "exp"
    row, scores, tasks = train_and_evaluate(
        cfg, "persyn", path, held_out, "eval-fp", out, LocalExecutor()
    )
    students = sorted((out / "students").glob("*/final"))
    assert len(students) == 2 and len(list((out / "eval").glob("*-eval-fp"))) == 2
    trained = [json.loads((s / "persyn_training.json").read_text()) for s in students]
    seeds = [t["student_training"]["seed"] for t in trained]
    assert sorted(seeds) == [0, 1]
    assert scores.shape == (2, 4) and len(tasks) == 4
    assert len(row["seed_scores"]) == 2
    assert row["score"] == pytest.approx(np.mean(row["seed_scores"]))
    stamps = [(s / "persyn_training.json").stat().st_mtime for s in students]
    again, again_scores, _ = train_and_evaluate(
        cfg, "persyn", path, held_out, "eval-fp", out, LocalExecutor()
    )
    assert again == row and np.array_equal(again_scores, scores, equal_nan=True)
    assert [(s / "persyn_training.json").stat().st_mtime for s in students] == stamps
    # Checkpoints gone (a later session, another clone): the evaluations and their
    # training records are enough; nothing is trained or evaluated again.
    import shutil

    shutil.rmtree(out / "students")
    third, third_scores, _ = train_and_evaluate(
        cfg, "persyn", path, held_out, "eval-fp", out, LocalExecutor()
    )
    assert third == row and np.array_equal(third_scores, scores, equal_nan=True)
    assert not (out / "students").exists()


def test_bootstrap_statistic_is_the_mean_of_task_accuracies():
    """`score` averages math accuracy and IFEval accuracy, not all prompts together."""
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    tasks = np.array(["math", "math", "math", "instruction"])
    assert task_mean(scores, tasks, np.arange(4)[None, :])[0] == pytest.approx(0.5)
    # A resample that misses a task averages the tasks it has.
    assert task_mean(scores, tasks, np.array([[0, 1, 2, 0]]))[0] == 1.0


def test_intervals_reach_the_table_the_csv_and_the_chart(tmp_path: Path, tiny_lm_dir: Path):
    cfg = parse_config(
        tiny_run_config(tiny_lm_dir, tmp_path / "run", experiment={"bootstrap_resamples": 500})
    )
    results = [dict(r) for r in RESULTS]
    per_prompt = {BASE_STUDENT: np.array([0.0, 0.0, 1.0, 0.0]), "persyn": np.ones(4)}
    add_intervals(results, per_prompt, np.array(["math"] * 4), cfg)
    assert results[0]["vs_persyn"] == pytest.approx(-0.75)
    assert results[0]["vs_persyn_low"] <= -0.75 <= results[0]["vs_persyn_high"]
    assert "vs_persyn" not in results[1]  # PerSyn is the reference
    lines = results_markdown(results).splitlines()
    assert lines[0].endswith("| score 95% CI | score - persyn | 95% CI (paired) |")
    assert lines[2].split(" | ")[-2] == "-0.750"
    assert lines[3].endswith("| [1.000, 1.000] | - | - |")
    parsed = list(csv.DictReader(io.StringIO(results_csv(results))))
    assert float(parsed[0]["vs_persyn"]) == pytest.approx(-0.75) and parsed[1]["vs_persyn"] == ""
    write_results(results, tmp_path)
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tiny_lm_dir: Path, tmp_path: Path):
    data = tiny_experiment_config(tiny_lm_dir, tmp_path, ["persyn", "strong", "quality-only"])
    # Evaluating on the training prompts themselves is refused before any work.
    with pytest.raises(ConfigError, match="held-out prompts equal a training prompt"):
        overlap = {**data, "evaluation": {**data["evaluation"], "prompts": data["prompts"]}}
        run_experiment(parse_config(overlap))
    results = run_experiment(parse_config(data))
    assert [r["dataset"] for r in results] == [BASE_STUDENT, "persyn", "strong", "quality-only"]
    assert all(r["score_low"] <= r["score"] <= r["score_high"] for r in results)
    assert all("vs_persyn_low" in r for r in results if r["dataset"] != "persyn")
    assert len({r["rows"] for r in results[1:]}) == 1  # equal sizes
    assert all(r["score"] is not None for r in results)
    for name in ("results.md", "results.csv", "results.png"):
        assert (tmp_path / "exp" / name).is_file()
    # Students are stored by a fingerprint of their data and settings (identical datasets
    # share one); each is a standard checkpoint that transformers loads as it is.
    finals = sorted((tmp_path / "exp" / "students").glob("*/final/model.safetensors"))
    assert 1 <= len(finals) <= len(results) - 1
    from transformers import AutoModelForCausalLM

    for final in finals:
        assert AutoModelForCausalLM.from_pretrained(final.parent).num_parameters() > 0

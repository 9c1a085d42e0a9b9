"""`persyn experiment`: results table, chart, and a tiny end-to-end run (slow)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import tiny_run_config

from persyn.artifacts import RunArtifacts
from persyn.config import parse_config
from persyn.eval.experiment import (
    BASE_STUDENT,
    experiment_prompts,
    results_csv,
    results_markdown,
    run_experiment,
    write_results,
)
from persyn.pipeline import Run
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


def test_experiment_prompts_are_not_the_calibration_draw(tiny_lm_dir: Path, tmp_path: Path):
    """`Random(seed).sample(ids, k)` would be a prefix of the calibration draw."""
    import random

    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", experiment={"size": 10, "seed": 0})
    run = Run(parse_config(data), RunArtifacts(tmp_path / "run"), None)  # type: ignore[arg-type]
    ids = [f"p{i:03d}" for i in range(40)]
    run.store.write_prompts(Prompt(i, [{"role": "user", "content": i}]) for i in ids)
    chosen = experiment_prompts(run)
    assert len(chosen) == 10 and chosen == sorted(chosen) and chosen == experiment_prompts(run)
    assert chosen != sorted(random.Random(0).sample(ids, 10))


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tiny_lm_dir: Path, tmp_path: Path):
    data = tiny_run_config(tiny_lm_dir, tmp_path / "run")
    data["student"]["family"] = "tiny"
    data["teachers"][0]["family"] = "tiny"
    data["student_training"] = {
        "batch_size": 4,
        "sft": {"max_steps": 2, "gradient_checkpointing": False},
    }
    data["evaluation"] = {
        "prompts": {"builtin": "demo-mix", "num_prompts": 4, "seed": 9},
        "max_new_tokens": 4,
    }
    data["experiment"] = {
        "datasets": ["persyn", "strong", "quality-only"],
        "size": 12,
        "output_dir": str(tmp_path / "exp"),
    }
    results = run_experiment(parse_config(data))
    assert [r["dataset"] for r in results] == [BASE_STUDENT, "persyn", "strong", "quality-only"]
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

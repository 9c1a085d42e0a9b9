"""Learnability rows are reused only under what decides their number: the precision the
scorer resolves (not the literal `auto`), its engine, the student's `max_length` and the
chat template its tokenizer holds. Runtime settings (the batch token budget) reuse them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_run_config

from persyn.config import parse_config
from persyn.models import load_tokenizer
from persyn.pipeline import Run, run_stage
from persyn.stages.score import plan_scores
from persyn.store import read_jsonl

SOLVERS = [
    {"name": name, "backend": "scripted", "model": name}
    for name in ("solver-verbose", "solver-concise", "solver-quick")
]
CALIBRATION = 8
ROWS = CALIBRATION * len(SOLVERS)
PERSYN = str(Path(sys.executable).parent / "persyn")


def scoring_config(student_dir: Path, run_dir: Path, **student: Any) -> dict[str, Any]:
    """Programmatic teachers (nothing to generate with a model) and the tiny student, on
    the CPU wherever the test runs: `auto` then resolves to float32."""
    data = tiny_run_config(
        student_dir,
        run_dir,
        teachers=SOLVERS,
        prompts={"builtin": "demo-mix", "num_prompts": 12, "seed": 1},
        calibration={"size": CALIBRATION, "seed": 0},
        device="cpu",
    )
    data["student"] = {**data["student"], **student}
    return data


def score_again(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Run up to `score` and return the learnability rows it appended."""
    log = Path(data["run_dir"]) / "scores" / "learnability.jsonl"
    before = len(read_jsonl(log)) if log.exists() else 0
    run_stage(Run.open(parse_config(data)), "score")
    return read_jsonl(log)[before:]


@pytest.fixture(scope="module")
def scored(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = scoring_config(tiny_lm_dir, tmp_path_factory.mktemp("scored") / "run")
    assert len(score_again(data)) == ROWS
    return data


def copy_of(data: dict[str, Any], tmp_path: Path, **student: Any) -> dict[str, Any]:
    shutil.copytree(data["run_dir"], tmp_path / "run")
    changed = {**data, "run_dir": str(tmp_path / "run")}
    changed["student"] = {**data["student"], **student}
    return changed


@pytest.mark.parametrize(
    ("change", "recomputed"),
    [
        ({"dtype": "bfloat16"}, ROWS),
        ({"max_length": 200}, ROWS),
        # on the CPU `auto` is float32: the same number, so the same rows
        ({"dtype": "auto"}, 0),
        ({"batch_tokens": 64}, 0),
        ({}, 0),
    ],
)
def test_rows_are_recomputed_exactly_when_their_number_would_change(
    scored: dict[str, Any], tmp_path: Path, change: dict[str, Any], recomputed: int
) -> None:
    new_rows = score_again(copy_of(scored, tmp_path, **change))
    assert len(new_rows) == recomputed
    if recomputed:
        old = {
            (r["prompt_id"], r["teacher"]): r
            for r in read_jsonl(Path(scored["run_dir"]) / "scores" / "learnability.jsonl")
        }
        assert all(r["fp"] != old[r["prompt_id"], r["teacher"]]["fp"] for r in new_rows)


def test_another_scorer_does_not_reuse_the_rows(scored: dict[str, Any], tmp_path: Path) -> None:
    """vLLM's kernels give other numbers than transformers': none of the rows the hf
    scorer wrote count as scored for `scorer: vllm` (the plan; vLLM itself need not run)."""
    for scorer, todo in (("hf", 0), ("vllm", ROWS)):
        run = Run.open(parse_config(copy_of(scored, tmp_path / scorer, scorer=scorer)))
        assert len(plan_scores(run, run.store.split().calibration).todo_l) == todo


def test_a_changed_chat_template_rescores(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The student's template edited in place (same path, same config) before a later
    `persyn score`: the stage is redone and every row recomputed under the new template."""
    student = tmp_path / "student"
    shutil.copytree(tiny_lm_dir, student)
    data = scoring_config(student, tmp_path / "run")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    log = tmp_path / "run" / "scores" / "learnability.jsonl"

    def persyn_score() -> int:
        """Rows a `persyn score` process appends (a process of its own, as a user's next
        command: nothing of the tokenizer is remembered from before)."""
        before = len(read_jsonl(log)) if log.exists() else 0
        done = subprocess.run([PERSYN, "score", str(config), "--quiet"], capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return len(read_jsonl(log)) - before

    assert persyn_score() == ROWS
    tokenizer = load_tokenizer(parse_config(data).student)
    tokenizer.chat_template = "{{ 'Answer briefly.\n' }}" + tokenizer.chat_template
    tokenizer.save_pretrained(student)
    assert persyn_score() == ROWS
    assert persyn_score() == 0  # and then they are reused

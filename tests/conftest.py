"""Shared fixtures: tiny models built from a config (no download), a tiny run config."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from persyn.demo.tiny_student import SMOL  # noqa: F401 (the tests import it from here)

# Before any fixture: whatever runs outside the fixtures below (a session fixture, a
# collection-time import) writes to a throwaway store, never to ~/.cache/persyn.
os.environ["PERSYN_STORE"] = str(Path(tempfile.mkdtemp(prefix="persyn-store-")) / "answers.sqlite")


@pytest.fixture(scope="module", autouse=True)
def module_answer_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests never write into the user's answer store: a module's fixtures (often a
    whole run) get one of their own, so no module finds another's answers."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("answer-store") / "answers.sqlite"
        mp.setenv("PERSYN_STORE", str(path))
        yield path


@pytest.fixture(autouse=True)
def answer_store_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test its own answer store (child processes inherit it): a run in one test
    never finds answers another generated."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("answer-store") / "answers.sqlite"
        mp.setenv("PERSYN_STORE", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template."""
    from persyn.demo.tiny_student import build_tiny_student

    return build_tiny_student(tmp_path_factory.mktemp("tiny-lm"))


def tiny_run_config(tiny_lm_dir: Path, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A complete config: tiny HF student and LLM teacher plus the demo's solvers."""
    lm = {"model": str(tiny_lm_dir), "dtype": "float32"}
    cfg: dict[str, Any] = {
        "name": "tiny",
        "run_dir": str(run_dir),
        "student": {**lm, "max_length": 256},
        "teachers": [
            # Random weights answer greedily with whitespace only: sample (seeded) instead.
            # They rarely end an answer, so nearly every one is cut at max_new_tokens: kept,
            # or this teacher would fail everywhere.
            {
                "name": "tiny-llm",
                "backend": "hf",
                **lm,
                "system_prompt": "Be brief.",
                "generation": {
                    "max_new_tokens": 8,
                    "temperature": 1.0,
                    "seed": 0,
                    "keep_truncated": True,
                },
            },
            {"name": "solver-verbose", "backend": "scripted", "model": "solver-verbose"},
            {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"},
            {"name": "solver-quick", "backend": "scripted", "model": "solver-quick"},
        ],
        "prompts": {"builtin": "demo-mix", "num_prompts": 30, "seed": 1},
        "calibration": {"size": 16, "seed": 0},
        "rewards": {"quality": [{"kind": "math"}, {"kind": "ifeval"}]},
        "router": {"epochs": 20, "val_fraction": 0.25, "test_fraction": 0.25},
    }
    cfg.update(overrides)
    return cfg


def tiny_experiment_config(
    tiny_lm_dir: Path, tmp_path: Path, datasets: list[str], **overrides: Any
) -> dict[str, Any]:
    """`tiny_run_config` (run in `tmp_path/run`) set up for `persyn experiment`: a tiny
    student trained 2 steps, evaluated on 4 held-out `demo-mix` prompts, on 12-row
    `datasets` written to `tmp_path/exp`."""
    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", **overrides)
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
    data["experiment"] = {"datasets": datasets, "size": 12, "output_dir": str(tmp_path / "exp")}
    return data

"""Truncated answers are known: every backend records why generation stopped; an answer cut
at `max_new_tokens` fails (loses in routing, is not exported) unless its teacher keeps
such answers; answers longer than `student.max_length` are counted per teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_run_config
from rich.console import Console

from persyn.config import TeacherConfig, parse_config
from persyn.pipeline import Run, run_pipeline
from persyn.report.headline import print_summary
from persyn.stages.common import teacher_fingerprint
from persyn.stages.export import CUT_ANSWER, why
from persyn.stages.score import failed_answer
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt, make_teacher

PROMPTS = [
    Prompt("p1", [{"role": "user", "content": "What is 2 + 3?"}]),
    Prompt("p2", [{"role": "user", "content": "Name a colour."}]),
]


def generate(cfg: dict[str, Any]) -> list[Any]:
    teacher = make_teacher(TeacherConfig.model_validate(cfg))
    teacher.load()
    try:
        return teacher.generate(PROMPTS)
    finally:
        teacher.unload()


def test_an_hf_answer_cut_at_max_new_tokens_says_length(tiny_lm_dir: Path) -> None:
    # Random weights almost never sample an end token within 3 tokens.
    results = generate(
        {
            "name": "tiny",
            "backend": "hf",
            "model": str(tiny_lm_dir),
            "dtype": "float32",
            "generation": {"max_new_tokens": 3, "temperature": 1.0, "seed": 0},
        }
    )
    assert [g.finish_reason for g in results] == ["length", "length"]
    assert all(g.truncated and g.completion_tokens == 3 for g in results)


def test_a_scripted_answer_is_whole() -> None:
    results = generate({"name": "s", "backend": "scripted", "model": "solver-verbose"})
    assert [g.finish_reason for g in results] == ["stop", "stop"]
    assert not any(g.truncated for g in results)


def test_a_cut_answer_fails_unless_its_teacher_keeps_it() -> None:
    cut = {"error": None, "text": "The answer is", "finish_reason": "length", "truncated": True}
    whole = {**cut, "finish_reason": "stop", "truncated": False}
    teacher = TeacherConfig(name="t", backend="scripted", model="solver-quick")
    keeping = teacher.model_copy(
        update={"generation": teacher.generation.model_copy(update={"keep_truncated": True})}
    )
    assert failed_answer(cut, teacher) and not failed_answer(cut, keeping)
    assert not failed_answer(whole, teacher)
    # a row from before truncation was recorded counts as whole
    assert not failed_answer({"error": None, "text": "x"}, teacher)
    # keeping cut answers changes no answer: the cached rows stay valid
    assert teacher_fingerprint(teacher) == teacher_fingerprint(keeping)


def cut_config(tiny_lm_dir: Path, run_dir: Path, keep: bool) -> dict[str, Any]:
    """The tiny config with the LLM teacher's cut answers failed (or kept), routed by
    near-uniform sampling so that it gets routed prompts, and a student that reads only
    96 tokens (the verbose solver's answers do not fit)."""
    data = tiny_run_config(tiny_lm_dir, run_dir)
    data["teachers"][0]["generation"]["keep_truncated"] = keep
    data["student"]["max_length"] = 96
    data["routing"] = {"kind": "sample", "temperature": 1000.0, "seed": 0}
    return data


@pytest.fixture(scope="module")
def cut_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    data = cut_config(tiny_lm_dir, tmp_path_factory.mktemp("truncation") / "run", keep=False)
    run_pipeline(parse_config(data))
    return Run.open(parse_config(data))


def test_cut_answers_lose_in_routing_and_are_not_exported(cut_run: Run) -> None:
    store = cut_run.store
    split = store.split()
    llm = cut_run.cfg.teacher("tiny-llm")
    rows = list(store.generation_log("tiny-llm").rows.values())
    assert rows and all(r["finish_reason"] == "length" and r["truncated"] for r in rows)
    for solver in ("solver-verbose", "solver-concise", "solver-quick"):
        assert all(not r["truncated"] for r in store.generation_log(solver).rows.values())

    calibrated = store.marker("calibrate")["teachers"]
    assert calibrated["tiny-llm"]["truncated"] == len(split.calibration)
    assert calibrated["solver-verbose"]["truncated"] == 0

    rewards = store.rewards()
    column = rewards.teachers.index("tiny-llm")
    assert rewards.failed[:, column].all()  # every cut answer failed ...
    assert np.isneginf(rewards.routing_reward[:, column]).all()  # ... and loses every pair
    assert np.isnan(rewards.reward[:, column]).all()  # left out of the mix
    assert not np.isnan(rewards.learnability[:, column]).any()  # its raw scores are kept
    assert "tiny-llm" not in rewards.oracle

    dataset = store.dataset()
    assert all(r["teacher"] != "tiny-llm" for r in dataset)
    routed_to_llm = [r["prompt_id"] for r in store.routes() if r["teacher"] == "tiny-llm"]
    assert routed_to_llm  # the sampling policy routed some prompts to it
    # a routed prompt whose answer was cut falls back to its next-best teacher
    failed = {f["prompt_id"] for f in read_jsonl(store.failed_path())}
    by_id = {r["id"]: r for r in dataset}
    for pid in routed_to_llm:
        assert pid not in failed
        assert by_id[pid]["provenance"]["fallback_from"] == ["tiny-llm"]
    # left without a fallback, its reason is the cut
    cut_row = store.generation_log("tiny-llm").rows[
        next(iter(store.generation_log("tiny-llm").rows))
    ]
    assert why(cut_run, "tiny-llm", cut_row) == CUT_ANSWER

    summary = store.summary()
    asked = len(split.calibration) + len(routed_to_llm)
    assert summary["truncated_answers"]["tiny-llm"] == asked
    assert summary["truncation_share"]["tiny-llm"] == 1.0
    assert summary["truncation_share"]["solver-verbose"] == 0.0
    assert not llm.generation.keep_truncated
    card = store.card_path().read_text()
    assert "## Truncated answers" in card
    assert f"| tiny-llm | {asked} | 100.0% | failed, not exported |" in card
    console = Console(record=True, width=400)
    print_summary(summary, str(store.root), console)
    assert f"answers {asked} cut at max_new_tokens and failed (tiny-llm {asked})" in (
        console.export_text()
    )
    kept = {**summary, "keeps_truncated": ["tiny-llm"]}
    console = Console(record=True, width=400)
    print_summary(kept, str(store.root), console)
    assert "and kept (generation.keep_truncated) (tiny-llm" in console.export_text()


def test_answers_longer_than_the_student_reads_are_counted_per_teacher(cut_run: Run) -> None:
    store = cut_run.store
    ids = set(store.split().calibration)
    scored = [r for r in store.score_log("learnability").rows.values() if r["prompt_id"] in ids]
    too_long = {
        t: sum(r["truncated"] for r in scored if r["teacher"] == t)
        for t in cut_run.cfg.teacher_names
    }
    assert too_long["solver-verbose"] > 0  # its long solutions do not fit in 96 tokens
    assert too_long["solver-quick"] == 0  # one-line answers do
    summary = store.summary()
    assert summary["student_truncated"] == too_long
    share = summary["student_truncation_share"]["solver-verbose"]
    assert share == too_long["solver-verbose"] / len(ids)
    card = store.card_path().read_text()
    verbose = f"{too_long['solver-verbose']} ({share:.1%})"
    assert f"| solver-verbose | 0 | 0.0% | failed, not exported | {verbose} |" in card


def test_keeping_cut_answers_remixes_without_generating_again(
    cut_run: Run, tiny_lm_dir: Path
) -> None:
    store = cut_run.store
    before = dict(store.generation_log("tiny-llm").rows)
    data = cut_config(tiny_lm_dir, store.root, keep=True)
    summary = run_pipeline(parse_config(data))
    kept = Run.open(parse_config(data)).store
    after = kept.generation_log("tiny-llm")
    # the same rows (the teacher's fingerprint is unchanged), none written twice; only
    # prompts newly routed to it are generated
    assert all(after.rows[key] == row for key, row in before.items())
    assert len(after.path.read_text().splitlines()) == len(after.rows)
    rewards = kept.rewards()
    column = rewards.teachers.index("tiny-llm")
    assert not rewards.failed[:, column].any()
    assert not np.isnan(rewards.reward[:, column]).any()
    assert CUT_ANSWER not in summary["failed_reasons"]
    assert "kept (keep_truncated)" in kept.card_path().read_text()

"""Quality signals: math-verify correctness, IFEval constraints, weighted combination, and
the instruction prompt set the demo generates."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from persyn.config import ConfigError, QualitySignal
from persyn.data import builtin_prompts
from persyn.demo.prompts import CONSTRAINTS, compatible
from persyn.rewards.quality import IFEvalConstraints, MathCorrectness, combined_quality
from persyn.teachers.base import Prompt

MATH = Prompt("m1", [{"role": "user", "content": "Maya has 40 apples..."}], "math", "42")


def instruction(ids: list[str], kwargs: list[dict] | None = None) -> Prompt:
    meta = {"instruction_id_list": ids, "kwargs": kwargs or [{} for _ in ids]}
    return Prompt(
        "i1", [{"role": "user", "content": "Describe the sea."}], "instruction", None, meta
    )


def math_values(response: str, **options: object) -> float | None:
    [s] = MathCorrectness(QualitySignal(kind="math", options=options)).score([(MATH, response)])
    assert s is not None
    return s.value


def test_math_correctness_against_reference() -> None:
    assert math_values("6 * 7 = 42. The answer is 42.") == 1.0
    assert math_values("The answer is 41.") == 0.0
    [na] = MathCorrectness(QualitySignal(kind="math")).score(
        [(instruction(["punctuation:no_comma"]), "42")]
    )
    assert na is None


def test_math_output_is_parsed_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    attack = f"__import__('os').system('touch {marker}') and the answer is 42"
    math_values(attack)
    math_values(f"$\\text{{{attack}}}$")
    assert not marker.exists()


def test_math_time_limit_per_check() -> None:
    huge = "$" + "+".join(["x"] * 3000) + "$"  # slow to parse symbolically
    start = time.perf_counter()
    assert math_values(huge, timeout_seconds=1) == 0.0
    assert time.perf_counter() - start < 6  # parse and compare each stop at the limit


def test_ifeval_strict_and_loose() -> None:
    prompt = instruction(["change_case:english_lowercase"])
    response = "Sure!\nthe sea is wide and blue."  # lowercase only once the first line goes
    strict = IFEvalConstraints(QualitySignal(kind="ifeval")).score([(prompt, response)])
    loose = IFEvalConstraints(QualitySignal(kind="ifeval", options={"mode": "loose"})).score(
        [(prompt, response)]
    )
    assert strict[0].value == 0.0 and loose[0].value == 1.0
    with pytest.raises(ConfigError, match="mode"):
        IFEvalConstraints(QualitySignal(kind="ifeval", options={"mode": "lax"})).score(
            [(prompt, "x")]
        )


def test_ifeval_partial_binary_and_bad_metadata() -> None:
    prompt = instruction(
        ["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["blue"]}]
    )
    response = "The sea is green and calm."  # no comma: yes; the word blue: no
    partial = IFEvalConstraints(QualitySignal(kind="ifeval")).score([(prompt, response)])
    binary = IFEvalConstraints(QualitySignal(kind="ifeval", options={"binary": True})).score(
        [(prompt, response)]
    )
    assert partial[0].value == 0.5 and binary[0].value == 0.0
    [bad] = IFEvalConstraints(QualitySignal(kind="ifeval")).score(
        [(instruction(["keywords:no_such_check"]), "text")]
    )
    assert bad.value is None and "no_such_check" in bad.error and "i1" in bad.error
    [bad_kwargs] = IFEvalConstraints(QualitySignal(kind="ifeval")).score(
        [(instruction(["keywords:existence"], [{"keyword_list": ["x"]}]), "text")]
    )
    assert bad_kwargs.value is None and "meta.kwargs" in bad_kwargs.error


def test_combined_quality_weights_and_errors() -> None:
    signals = [
        QualitySignal(kind="math", weight=1.0),
        QualitySignal(kind="ifeval", weight=3.0),
    ]
    both = instruction(["punctuation:no_comma"])
    both.kind, both.reference = "math", "42"  # a math prompt that also carries a constraint
    rows = combined_quality(
        signals,
        [
            (MATH, "The answer is 42."),
            (both, "The answer is 41 I think."),
            (instruction(["keywords:bogus"]), "x"),
            (Prompt("p", [], "instruction"), "x"),
        ],
    )
    assert rows[0]["quality"] == 1.0 and rows[0]["signals"] == {"math": 1.0}
    assert rows[1]["quality"] == pytest.approx((1 * 0.0 + 3 * 1.0) / 4)  # wrong, no comma
    assert rows[1]["signals"] == {"math": 0.0, "ifeval": 1.0}
    assert rows[2]["quality"] is None and rows[2]["error"].startswith("ifeval: ")
    assert rows[3] == {"quality": None, "signals": {}, "error": None}


def test_every_demo_constraint_is_checkable() -> None:
    """Every constraint id exists in if-verifiable and accepts its kwargs."""
    prompts = builtin_prompts("instructions", 2 * len(CONSTRAINTS), seed=3)
    scores = IFEvalConstraints(QualitySignal(kind="ifeval")).score(
        [(p, "A plain answer about the topic.") for p in prompts]
    )
    assert all(s is not None and s.error is None for s in scores)
    assert {i for p in prompts for i in p.meta["instruction_id_list"]} == {
        c[0] for c in CONSTRAINTS
    }


def test_instruction_set_tiers() -> None:
    prompts = builtin_prompts("instructions", 40, seed=0)
    tiers = [p.meta["tier"] for p in prompts]
    assert tiers.count(1) == tiers.count(2) == 20
    for p in prompts:
        ids = p.meta["instruction_id_list"]
        assert len(ids) == p.meta["tier"] == len(p.meta["kwargs"])
        if len(ids) == 2:
            assert compatible(*ids)
    assert builtin_prompts("instructions", 40, seed=0)[5].to_row() == prompts[5].to_row()

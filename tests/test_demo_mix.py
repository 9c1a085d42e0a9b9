"""Issue 10: on the demo's mixed prompt set the oracle's teacher varies with the task kind
and difficulty, as designed. Real quality scorers (math-verify, if-verifiable), real
normalisation and mix, learnability from the tiny student; the LLM teachers are stood in
for by two deterministic writers that behave as the measured SmolLM2 teachers do (wrong on
arithmetic; one follows the verifiable constraint, one ignores it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from persyn.config import QualitySignal, StudentConfig
from persyn.data import builtin_prompts
from persyn.method import combine, oracle_choice
from persyn.plugins import SCRIPTED_TEACHERS, resolve
from persyn.rewards.learnability import LearnabilityScorer
from persyn.rewards.quality import combined_quality
from persyn.teachers.base import Prompt

CAREFUL = {
    "keywords:existence": "It was a {kw} and calm day by the sea.",
    "change_case:english_lowercase": "the sea was calm and wide today.",
    "length_constraints:number_words": "The sea was calm today.",
    "startend:quotation": '"The sea was calm today."',
    "change_case:english_capital": "THE SEA WAS CALM TODAY.",
    "detectable_format:title": "<<The Sea>>\nThe sea was calm today.",
}
CARELESS = (
    "Here is a long answer about the topic you asked for, written in a normal style with "
    "many words and Capital letters, as usual for me."
)


def llm_wrong_arithmetic(prompt: Prompt) -> str:
    # what the measured small LLM does: adds the first numbers and stops, off by one
    return f"Let's think step by step. The answer is {prompt.meta['start'] + 1}."


def llm_careful(prompt: Prompt) -> str:
    if prompt.kind == "math":
        return llm_wrong_arithmetic(prompt)
    [ident] = prompt.meta["instruction_id_list"]
    return CAREFUL[ident].format(kw=prompt.meta["kwargs"][0].get("keywords", [""])[0])


def llm_careless(prompt: Prompt) -> str:
    return llm_wrong_arithmetic(prompt) if prompt.kind == "math" else CARELESS


TEACHERS = {
    "llm-careful": llm_careful,
    "llm-careless": llm_careless,
    # the demo's solvers by their config names, loaded the way a scripted teacher loads them
    **{name: resolve(name, "scripted model", SCRIPTED_TEACHERS) for name in SCRIPTED_TEACHERS},
}
SIGNALS = [QualitySignal(kind="math"), QualitySignal(kind="ifeval")]


@pytest.fixture(scope="module")
def mixed(tiny_lm_dir: Path) -> tuple[list[Prompt], np.ndarray, np.ndarray]:
    """Prompts, quality [prompts, teachers] and oracle choice on 36 demo-mix prompts."""
    prompts = builtin_prompts("demo-mix", 36, seed=0)
    names = list(TEACHERS)
    samples = [(p, TEACHERS[t](p)) for p in prompts for t in names]
    quality = np.array(
        [
            np.nan if q["quality"] is None else q["quality"]
            for q in combined_quality(SIGNALS, samples)
        ]
    ).reshape(len(prompts), len(names))
    student = StudentConfig(model=str(tiny_lm_dir), dtype="float32", max_length=256)
    scores = LearnabilityScorer(student).score([(p.messages, text) for p, text in samples])
    learn = np.array([s.value for s in scores], dtype=float).reshape(quality.shape)
    oracle = oracle_choice(combine(quality, learn, 0.4, "minmax"))
    return prompts, quality, oracle


def column(name: str) -> int:
    return list(TEACHERS).index(name)


def test_solvers_beat_llm_answers_on_arithmetic(mixed) -> None:
    prompts, quality, oracle = mixed
    solvers = {column(n) for n in ("solver-verbose", "solver-concise", "solver-quick")}
    math_rows = [i for i, p in enumerate(prompts) if p.kind == "math"]
    assert len(math_rows) >= 15
    for i in math_rows:
        assert quality[i, column("solver-verbose")] == quality[i, column("solver-concise")] == 1.0
        assert quality[i, column("llm-careful")] == quality[i, column("llm-careless")] == 0.0
        assert oracle[i] in solvers


def test_quick_solver_wrong_on_multistep(mixed) -> None:
    prompts, quality, oracle = mixed
    quick = column("solver-quick")
    by_difficulty = {1: [], 2: [], 3: []}
    for i, p in enumerate(prompts):
        if p.kind == "math":
            by_difficulty[p.meta["difficulty"]].append(i)
    assert all(by_difficulty.values())
    assert all(quality[i, quick] == 1.0 for i in by_difficulty[1])
    for i in by_difficulty[2] + by_difficulty[3]:
        assert quality[i, quick] == 0.0 and oracle[i] != quick


def test_instructions_go_to_the_teacher_that_follows_the_constraint(mixed) -> None:
    prompts, quality, oracle = mixed
    rows = [i for i, p in enumerate(prompts) if p.kind == "instruction"]
    kinds = {prompts[i].meta["instruction_id_list"][0] for i in rows}
    assert len(kinds) == len(CAREFUL)  # every constraint kind is exercised
    for i in rows:
        assert quality[i, column("llm-careful")] == 1.0, prompts[i].messages
        assert quality[i, column("llm-careless")] == 0.0, prompts[i].messages
        assert quality[i, column("solver-verbose")] == 0.0  # the solvers' refusal
        assert oracle[i] == column("llm-careful")


def test_oracle_choice_is_spread(mixed) -> None:
    _, _, oracle = mixed
    counts = Counter(oracle.tolist())
    assert len(counts) >= 3
    assert max(counts.values()) / len(oracle) <= 0.7

"""The LLM-as-judge quality signal: a scripted judge (this module's function) and, briefly,
a tiny Hugging Face model as the judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from persyn.config import ConfigError, QualitySignal
from persyn.rewards.judge import LLMJudge, parse_grade
from persyn.teachers.base import Prompt

REPLIES = {
    "good": "Correct and concise.\nScore: 9",
    "mid": "Mostly fine. I would give it [[6]].",
    "bold": "Solid.\n**Score:** 7/10",
    "chatty": "I cannot grade this one, sorry.",
    "too-high": "Score: 14",
    "broken": "",
}


def scripted_judge(prompt: Prompt) -> str:
    """Grades by the marker word the answer carries; raises on `crash` (a judge failure)."""
    text = prompt.messages[-1]["content"]
    answer = text.split("[Answer to grade]")[1]
    if "crash" in answer:
        raise RuntimeError("judge backend down")
    return next(reply for marker, reply in REPLIES.items() if marker in answer)


def judge(**options: object) -> LLMJudge:
    teacher = {"backend": "scripted", "model": "test_judge:scripted_judge", "batch_size": 2}
    return LLMJudge(QualitySignal(kind="judge", options={"teacher": teacher, **options}))


PROMPT = Prompt("p1", [{"role": "user", "content": "Name a colour."}])


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("Score: 8", 8.0),
        ("The scale is 1 to 10. Final score: 3", 3.0),
        ("score = 4.5", 4.5),
        ("Rating: [[2]]", 2.0),
        ("I'd say 7/10 overall", 7.0),
        (" 5 ", 5.0),
    ],
)
def test_parse_grade(reply: str, grade: float) -> None:
    assert parse_grade(reply, 1, 10) == (grade, None)


def test_parse_grade_failures_say_why() -> None:
    assert parse_grade("no number here", 1, 10)[1].startswith("unparsable judge reply: 'no number")
    assert parse_grade("Score: 0", 1, 10) == (None, "judge grade 0 outside 1..10")


def test_scripted_judge_valid_and_malformed_replies() -> None:
    answers = ["good", "mid", "bold", "chatty", "too-high", "broken", "crash"]
    scores = judge().score([(PROMPT, a) for a in answers])
    values = [s.value for s in scores]
    assert values[:3] == [pytest.approx(8 / 9), pytest.approx(5 / 9), pytest.approx(6 / 9)]
    assert [s.raw for s in scores[:3]] == [9.0, 6.0, 7.0]
    assert values[3:] == [None, None, None, None]  # recorded, not guessed
    assert scores[3].error == "unparsable judge reply: 'I cannot grade this one, sorry.'"
    assert scores[4].error == "judge grade 14 outside 1..10"
    assert scores[5].error == "unparsable judge reply: ''"
    assert "judge backend down" in scores[6].error
    # the judge's tokens are kept for the spend ledger (a function judge: its words)
    assert [s.completion_tokens for s in scores[:3]] == [5, 7, 3]


def test_rubric_kinds_and_scale() -> None:
    rubric = (
        "Q: {prompt}\nRef: {reference}\n[Answer to grade]\n{response}\n"
        "Grade {min_score}-{max_score}."
    )
    scorer = judge(rubric=rubric, min_score=0, max_score=10, kinds=["math"])
    math = Prompt("m", [{"role": "user", "content": "2+2? {not a placeholder}"}], "math", "4")
    request = scorer.judge_prompt(scorer._rubric(0, 10), math, "good {response}")
    assert request.messages[0]["content"] == (
        "Q: 2+2? {not a placeholder}\nRef: 4\n[Answer to grade]\ngood {response}\nGrade 0-10."
    )
    scores = scorer.score([(math, "good"), (PROMPT, "good")])
    assert scores[0].value == pytest.approx(0.9) and scores[1] is None
    with pytest.raises(ConfigError, match="rubric: must contain"):
        judge(rubric="no placeholders").score([(PROMPT, "good")])
    with pytest.raises(ConfigError, match=r"options.teacher.backend"):
        LLMJudge(
            QualitySignal(kind="judge", options={"teacher": {"backend": "telepathy", "model": "x"}})
        ).score([(PROMPT, "good")])


def test_tiny_hf_model_as_judge(tiny_lm_dir: Path) -> None:
    """A real HF backend end to end: a random tiny model's reply is graded or, far more
    likely, recorded as unparsable with the reply's start."""
    teacher = {
        "backend": "hf",
        "model": str(tiny_lm_dir),
        "dtype": "float32",
        "generation": {"max_new_tokens": 6},
    }
    scorer = LLMJudge(QualitySignal(kind="judge", options={"teacher": teacher}))
    scores = scorer.score([(PROMPT, "Blue."), (PROMPT, "Green.")])
    for s in scores:
        assert (s.value is not None and 0 <= s.value <= 1) or s.error.startswith(
            ("unparsable judge reply", "judge grade", "judge 'judge' failed")
        )

"""The mini-replication's task: disjoint train/held-out problems, teachers that differ."""

from __future__ import annotations

from persyn.demo.replication import (
    boxed,
    held_out_instructions,
    held_out_problems,
    is_held_out,
    plain,
    quick,
    side,
    train_instructions,
    train_problems,
    validation_instructions,
    validation_problems,
)
from persyn.eval.student import check_held_out, normalise_text, score_answers
from persyn.teachers.base import Generation, Prompt


def test_train_and_held_out_problems_never_share_a_text_or_an_id():
    train, held = train_problems(600, 0), held_out_problems(300, 0)
    assert len({normalise_text(p.text) for p in train}) == 600
    assert not {p.id for p in train} & {p.id for p in held}
    assert check_held_out(held, train) == held  # no overlap, whatever the seeds
    assert check_held_out(held_out_problems(300, 5), train_problems(600, 7))
    assert all(is_held_out(p.text) for p in held) and not any(is_held_out(p.text) for p in train)
    assert train_problems(30, 0) == train_problems(30, 0)  # seeded
    assert {p.meta["difficulty"] for p in held} == {1, 2, 3}
    assert min(int(p.reference or 0) for p in train + held) >= 0  # counts never go negative


def test_validation_prompts_are_a_third_side():
    """`persyn tune`'s validation prompts share no text with training or held-out ones, on
    both tasks, whatever the seeds."""
    for train, validation, held in [
        (train_problems(300, 1), validation_problems(100, 2), held_out_problems(100, 3)),
        (
            train_instructions(300, 1),
            validation_instructions(100, 2),
            held_out_instructions(100, 3),
        ),
    ]:
        assert check_held_out(validation, train + held) == validation
        assert check_held_out(held, train) == held
        assert {side(p.text) for p in validation} == {"validation"}
        assert len({p.id for p in train + validation + held}) == 500
    kinds = {i for p in train_instructions(100, 0) for i in p.meta["instruction_id_list"]}
    assert len(kinds) == 18  # every constraint kind of the `instructions` set


def _accuracy(teacher, prompts: list[Prompt]) -> float:
    answers = {p.id: Generation(p.id, teacher(p), 0, 1) for p in prompts}
    return score_answers(prompts, answers)["math_accuracy"]


def test_teachers_differ_in_correctness_by_difficulty():
    by_steps = {
        d: [p for p in train_problems(90, 0) if p.meta["difficulty"] == d] for d in (1, 2, 3)
    }
    assert [_accuracy(boxed, by_steps[d]) for d in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert [_accuracy(plain, by_steps[d]) for d in (1, 2, 3)] == [1.0, 1.0, 0.0]
    assert _accuracy(quick, by_steps[1]) == 1.0
    assert _accuracy(quick, by_steps[3]) < 0.5


def test_teachers_read_meta_not_the_text_or_the_reference():
    prompt = train_problems(2, 0)[1]
    blind = Prompt(prompt.id, [{"role": "user", "content": "unrelated"}], "math", None, prompt.meta)
    assert [f(blind) for f in (boxed, plain, quick)] == [f(prompt) for f in (boxed, plain, quick)]
    assert "only answers arithmetic" in boxed(Prompt("x", [{"role": "user", "content": "hi"}]))

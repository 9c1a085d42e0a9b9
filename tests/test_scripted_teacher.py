"""`backend: scripted` as a user's API: what the function gets and must return, its time
limit, options checked at validate, and its code in the cache key."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config

from persyn.config import ConfigError, TeacherConfig, parse_config
from persyn.pipeline import Run, StageError, run_stage, validate
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt, make_teacher

MODULE = "persyn_user_teacher"
USER_TEACHER = """
import time

def echo(prompt):
    return f"{prompt.id}|{prompt.kind}|{prompt.reference}|{prompt.meta}|{prompt.text}"

def nothing(prompt):
    return None

def slow_first(prompt):
    if prompt.id == "slow":
        time.sleep(3)
    return "done"

def answer(prompt):
    return "The answer is 1."
"""
PROMPTS = [
    Prompt("q1", [{"role": "user", "content": "What is 2+2?"}], "math", "4", {"level": 1}),
    Prompt("q2", [{"role": "user", "content": "Say hi."}]),
]


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / f"{MODULE}.py"
    path.write_text(USER_TEACHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit is never hidden by a .pyc
    return path


def scripted(function: str, **options: Any) -> TeacherConfig:
    return TeacherConfig(
        name="mine", backend="scripted", model=f"{MODULE}:{function}", options=options
    )


def test_the_function_gets_the_prompt_and_its_fields(user_module: Path) -> None:
    teacher = make_teacher(scripted("echo"))
    first, second = teacher.generate(PROMPTS)
    teacher.unload()
    assert first.text == "q1|math|4|{'level': 1}|What is 2+2?" and first.error is None
    assert second.text == "q2|instruction|None|{}|Say hi."


def test_a_non_string_answer_is_an_error_row_naming_the_returned_type(
    user_module: Path, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    [row, _] = make_teacher(scripted("nothing")).generate(PROMPTS)
    assert (row.text, row.error) == (
        "",
        f"{MODULE}:nothing returned NoneType, not the answer as a str",
    )

    teachers = [
        {"name": "mine", "backend": "scripted", "model": f"{MODULE}:nothing"},
        {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"},
    ]
    cfg = tiny_run_config(tiny_lm_dir, tmp_path, teachers=teachers, max_error_rate=0.0)
    with pytest.raises(StageError) as info:
        run_stage(Run.open(parse_config(cfg)), "calibrate")
    assert re.match(  # one line: the teacher, the first prompt, the type returned
        rf"calibrate: teacher 'mine': 16/16 rows failed; first: [\w-]+: {MODULE}:nothing "
        "returned NoneType, not the answer as a str - above max_error_rate",
        str(info.value),
    )


def test_a_call_past_timeout_s_is_an_error_row_and_the_next_call_goes_on(
    user_module: Path,
) -> None:
    teacher = make_teacher(scripted("slow_first", timeout_s=0.3))
    started = time.monotonic()
    slow, fast = teacher.generate([Prompt("slow", PROMPTS[0].messages), PROMPTS[1]])
    assert time.monotonic() - started < 2  # not the 3 s the first call sleeps
    assert slow.error == (
        f"{MODULE}:slow_first did not return within "
        "options.timeout_s=0.3 s (the call goes on in the background: a Python thread cannot "
        "be stopped)"
    )
    assert (fast.text, fast.error) == ("done", None)


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (
            {"backend": "scripted", "model": "solver-quick", "options": {"timeout": 5}},
            "teacher 'x' (scripted backend) options: unknown key 'timeout'; valid keys: timeout_s",
        ),
        (
            {"backend": "hf", "model": "M", "options": {"dtype": "float32", "device": "cpu"}},
            "teacher 'x' (hf backend) options: unknown keys 'dtype', 'device'; valid keys: "
            "none, this backend takes no options",
        ),
    ],
)
def test_unknown_options_of_every_backend_are_refused_at_validate(
    tiny_lm_dir: Path, tmp_path: Path, teacher: dict[str, Any], message: str
) -> None:
    solver = {"name": "solver", "backend": "scripted", "model": "solver-concise"}
    cfg = parse_config(
        tiny_run_config(tiny_lm_dir, tmp_path, teachers=[solver, {"name": "x", **teacher}])
    )
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value) == message  # openai's: tests/test_openai_backend.py


def test_editing_the_function_regenerates_its_cached_answers(
    user_module: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teachers = [
        {"name": "mine", "backend": "scripted", "model": f"{MODULE}:answer"},
        {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"},
    ]
    run_dir = tmp_path / "run"
    cfg = parse_config(
        tiny_run_config(tiny_lm_dir, run_dir, teachers=teachers, calibration={"size": 6, "seed": 0})
    )
    run_stage(Run.open(cfg), "calibrate")
    mine = read_jsonl(run_dir / "generations" / "mine.jsonl")
    solver = read_jsonl(run_dir / "generations" / "solver-concise.jsonl")
    assert len(mine) == 6 and {r["text"] for r in mine} == {"The answer is 1."}

    user_module.write_text(USER_TEACHER.replace("The answer is 1.", "The answer is 42."))
    monkeypatch.delitem(sys.modules, MODULE)  # a new `persyn run` imports the module anew
    run_stage(Run.open(cfg), "calibrate")
    rows = read_jsonl(run_dir / "generations" / "mine.jsonl")
    assert len(rows) == 12 and {r["text"] for r in rows[6:]} == {"The answer is 42."}
    assert rows[6]["fp"] != mine[0]["fp"]
    assert read_jsonl(run_dir / "generations" / "solver-concise.jsonl") == solver  # untouched

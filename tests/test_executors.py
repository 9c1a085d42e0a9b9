"""The local executor hands generated rows to the stage's sink in large groups (one fsync
each), and keeps what was answered when generation stops midway."""

from __future__ import annotations

import pytest

import persyn.executors as executors
from persyn.config import TeacherConfig
from persyn.executors import LocalExecutor
from persyn.teachers.base import Generation, Prompt


def echo(prompt: Prompt) -> str:
    if prompt.id == "stop":
        raise KeyboardInterrupt  # not an error row: stops generation like Ctrl-C
    return f"answer to {prompt.id}"


TEACHER = TeacherConfig(name="echo", backend="scripted", model="test_executors:echo")


def prompts(n: int) -> list[Prompt]:
    return [Prompt(f"p{i}", [{"role": "user", "content": f"q{i}"}]) for i in range(n)]


def test_rows_reach_the_sink_in_groups_not_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[Generation]] = []
    LocalExecutor().generate(TEACHER, prompts(100), calls.append)
    assert [len(c) for c in calls] == [100]  # 13 batches of 8, one sink call
    calls.clear()
    monkeypatch.setattr(executors, "SINK_ROWS", 16)
    LocalExecutor().generate(TEACHER, prompts(100), calls.append)
    assert [len(c) for c in calls] == [16] * 6 + [4]
    assert [g.prompt_id for c in calls for g in c] == [f"p{i}" for i in range(100)]


def test_answered_rows_are_kept_when_generation_stops() -> None:
    calls: list[list[Generation]] = []
    todo = [*prompts(20), Prompt("stop", [{"role": "user", "content": "stop"}])]
    with pytest.raises(KeyboardInterrupt):
        LocalExecutor().generate(TEACHER, todo, calls.append)
    # the batches before the interrupted one (16 prompts) reached the sink
    assert [g.prompt_id for c in calls for g in c] == [f"p{i}" for i in range(16)]

"""Prompt loading: formats, and one-line errors naming the file, row and field."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from persyn.config import ConfigError, PromptsConfig, TeacherConfig, parse_config
from persyn.data import DataError, load_prompts
from persyn.plugins import SCRIPTED_TEACHERS, resolve
from persyn.teachers.scripted import ScriptedTeacher


def jsonl(tmp_path: Path, rows: list[Any], name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def load_error(path: Path, **cfg: Any) -> str:
    with pytest.raises(DataError) as info:
        load_prompts(PromptsConfig(source=str(path), **cfg))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_jsonl_rows(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        [
            {"id": "q1", "prompt": "What is 2+2?", "answer": "4", "type": "math"},
            {"id": 7, "prompt": "Say hi", "answer": "hi", "type": "instruction"},
        ],
    )
    prompts = load_prompts(
        PromptsConfig(source=str(path), reference_field="answer", kind_field="type")
    )
    assert [p.id for p in prompts] == ["q1", "7"]
    assert prompts[0].messages == [{"role": "user", "content": "What is 2+2?"}]
    assert (prompts[0].kind, prompts[0].reference) == ("math", "4")


def test_messages_drop_trailing_answer(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    path = jsonl(tmp_path, [{"id": "a", "messages": chat}])
    [p] = load_prompts(PromptsConfig(source=str(path), messages_field="messages"))
    assert p.messages == [{"role": "user", "content": "Hi"}]


def test_malformed_json_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "prompt": "ok"}, '{"id": "b", "prompt": '])
    assert "line 2: malformed JSON" in load_error(path)


def test_missing_field(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "text": "hello"}])
    message = load_error(path)
    assert "line 1: missing field 'prompt'" in message and "prompts.prompt_field" in message


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_or_whitespace_prompt(tmp_path: Path, text: str) -> None:
    path = jsonl(tmp_path, [{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": text}])
    assert "line 2: field 'prompt' is empty or not text" in load_error(path)


def test_empty_user_message(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "messages": [{"role": "user", "content": "  "}]}])
    assert "no non-empty user message" in load_error(path, messages_field="messages")


def test_duplicate_ids(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}],
    )
    message = load_error(path)
    assert "line 3: duplicate id 'a'" in message and "line 1" in message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "caf\xe9"}\n')
    assert "line 2: invalid UTF-8" in load_error(path)


def test_prompt_too_long(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "prompt": "x" * 101}])
    message = load_error(path, max_prompt_chars=100)
    assert "line 1: prompt has 101 characters > prompts.max_prompt_chars 100" in message


def test_not_an_object(tmp_path: Path) -> None:
    assert "line 1: expected a JSON object" in load_error(jsonl(tmp_path, ["[1, 2]"]))


def test_bad_kind(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "prompt": "x", "type": "poetry"}])
    assert "field 'type' must be math or instruction" in load_error(path, kind_field="type")


def test_missing_reference(tmp_path: Path) -> None:
    # math rows need one; instruction rows are verified without (a mixed file is fine)
    path = jsonl(tmp_path, [{"id": "a", "prompt": "Say hi"}, {"id": "b", "prompt": "1+1?"}])
    message = load_error(path, reference_field="answer", kind_field="kind", kind="math")
    assert "line 1: missing field 'answer'" in message
    rows = [{"id": "a", "prompt": "Say hi", "kind": "instruction"}, {"id": "b", "prompt": "1+1?"}]
    message = load_error(
        jsonl(tmp_path, rows), reference_field="answer", kind_field="kind", kind="math"
    )
    assert "line 2: missing field 'answer'" in message


def test_missing_file(tmp_path: Path) -> None:
    assert "prompts file not found" in load_error(tmp_path / "absent.jsonl")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n\n")
    assert "no prompts found" in load_error(path)


def test_datasets_folder_and_limit(tmp_path: Path) -> None:
    import datasets

    rows = [{"id": f"r{i}", "prompt": f"prompt {i}"} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    prompts = load_prompts(PromptsConfig(source=str(tmp_path / "ds"), limit=3))
    assert [p.id for p in prompts] == ["r0", "r1", "r2"]


def test_builtin_is_seeded() -> None:
    a = load_prompts(PromptsConfig(builtin="demo-mix", num_prompts=20, seed=3))
    b = load_prompts(PromptsConfig(builtin="demo-mix", num_prompts=20, seed=3))
    assert [p.to_row() for p in a] == [p.to_row() for p in b]
    assert {p.kind for p in a} == {"math", "instruction"}
    assert len({p.id for p in a}) == 20


USER_PLUGINS = """
from persyn.teachers.base import Prompt


def numbers(num_prompts, seed):
    return [
        Prompt(f"n{seed}-{i}", [{"role": "user", "content": f"Say {i}."}])
        for i in range(num_prompts)
    ]


def shout(prompt):
    return prompt.text.upper()


def not_prompts(num_prompts, seed):
    return ["Say 1."] * num_prompts
"""


def test_user_code_plugs_in_like_the_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's `module:function` prompt set and scripted teacher load through the same
    resolver as the demo's built-in names, which are only aliases for such strings."""
    (tmp_path / "persyn_user_plugins.py").write_text(USER_PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "persyn_user_plugins", raising=False)

    cfg = PromptsConfig(builtin="persyn_user_plugins:numbers", num_prompts=3, seed=5, limit=2)
    prompts = load_prompts(cfg)
    assert [p.id for p in prompts] == ["n5-0", "n5-1"]
    spec = {"name": "shout", "backend": "scripted", "model": "persyn_user_plugins:shout"}
    teacher = ScriptedTeacher(TeacherConfig(**spec))
    assert teacher.fn is sys.modules["persyn_user_plugins"].shout
    assert [g.text for g in teacher.generate(prompts)] == ["SAY 0.", "SAY 1."]

    builtin = resolve("solver-quick", "scripted model", SCRIPTED_TEACHERS)
    assert builtin is resolve(SCRIPTED_TEACHERS["solver-quick"], "scripted model", {})

    with pytest.raises(DataError, match="must return a list of Prompt"):
        load_prompts(PromptsConfig(builtin="persyn_user_plugins:not_prompts"))


def test_unknown_prompt_set_lists_the_builtins() -> None:
    data = {
        "student": {"model": "student"},
        "teachers": [{"name": n, "backend": "scripted", "model": n} for n in SCRIPTED_TEACHERS],
        "prompts": {"builtin": "demo_mix"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "run.yaml")
    assert str(info.value) == (
        "run.yaml: prompts.builtin: prompt set 'demo_mix': use a built-in "
        "(demo-mix, arithmetic, instructions) or module:function"
    )


def test_missing_user_module_is_one_line() -> None:
    cfg = PromptsConfig(builtin="persyn_no_such_module:prompts")  # only loading can tell
    with pytest.raises(ConfigError) as info:
        load_prompts(cfg)
    assert str(info.value) == (
        "prompts.builtin 'persyn_no_such_module:prompts': No module named "
        "'persyn_no_such_module' (is the module on PYTHONPATH?)"
    )


def test_usual_column_names_are_read_without_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only `prompts.source` set: `answer`, `kind`, `meta` and IFEval's own columns are read
    (they were dropped, every prompt an instruction with no reference)."""
    constraints = {"instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
    path = jsonl(
        tmp_path,
        [
            {"id": "m", "prompt": "What is 2+2?", "answer": "4", "kind": "math"},
            {"id": "i", "prompt": "Say hi in lowercase.", "kind": "instruction", **constraints},
            {"id": "t", "prompt": "Name a colour.", "meta": {"topic": "art"}},
            {"id": "s", "prompt": "What is 3+3?", "kind": "math", "solution": "3+3 = 6"},
        ],
    )
    m, i, t, s = load_prompts(PromptsConfig(source=str(path)))
    assert (m.kind, m.reference) == ("math", "4")
    assert (i.kind, i.reference, i.meta) == ("instruction", None, constraints)
    assert (t.kind, t.meta) == ("instruction", {"topic": "art"})
    assert (s.kind, s.reference) == ("math", "3+3 = 6")
    assert capsys.readouterr().err == ""  # every column was read: nothing to warn about


def test_a_column_nothing_reads_is_named_in_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = jsonl(
        tmp_path,
        [
            {"id": "a", "prompt": "What is 2+2?", "answer": "4", "solution": "2+2 = 4"},
            {"id": "b", "prompt": "Say hi.", "expected": "hi", "source": "web"},
        ],
    )
    a, b = load_prompts(PromptsConfig(source=str(path)))
    assert a.reference == "4" and b.reference is None  # the short answer, before the worked one
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"warning: {path}: columns not read: expected, solution, source; to use one, name it "
        "in prompts.reference_field (reference answer), prompts.kind_field (math or "
        "instruction) or prompts.meta_field (an object of metadata, e.g. IFEval constraints)"
    )


def test_math_prompts_without_a_reference_column_are_refused(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "prompt": "What is 2+2?", "expected": "4"}])
    assert load_error(path, kind="math") == (
        f"{path}: line 1: a math prompt needs a reference answer, and none of the columns "
        "reference, answer, target, solution has one; name the column that holds it in "
        "prompts.reference_field"
    )
    [p] = load_prompts(PromptsConfig(source=str(path), kind="math", reference_field="expected"))
    assert p.reference == "4"


def test_repeated_prompt_texts_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
        {"id": "b", "prompt": "Say hi."},
        {"id": "c", "prompt": "  what IS 2+2?\n", "answer": "4"},
        {"id": "d", "prompt": "say  hi."},
    ]
    path = jsonl(tmp_path, rows)
    assert len(load_prompts(PromptsConfig(source=str(path)))) == 4
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"warning: {path}: 2 prompts repeat the text of an earlier prompt under another id "
        f"(first: 'c' ({path}: line 3) repeats 'a'); each is generated and trained on "
        "separately, drop the repeats unless that is intended"
    )
    rows[2]["answer"] = "5"  # one of the two references is wrong
    assert load_error(jsonl(tmp_path, rows)) == (
        f"{path}: line 3: prompt 'c' has the text of 'a' ({path}: line 1) but another "
        "reference ('5', not '4'); fix the wrong one or drop a row"
    )


def test_missing_prompt_column_lists_the_columns(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"id": "a", "question": "What is 2+2?", "answer": "4"}])
    assert load_error(path) == (
        f"{path}: line 1: missing field 'prompt' (set prompts.prompt_field, or "
        "prompts.messages_field for chat messages; the row's columns: id, question, answer)"
    )

"""Prompt loading: formats, and one-line errors naming the file, row and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from persyn.config import PromptsConfig
from persyn.data import DataError, load_prompts


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
    path = jsonl(tmp_path, [{"id": "a", "prompt": "1+1?"}])
    assert "missing field 'answer'" in load_error(path, reference_field="answer")


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

"""The answer store: one SQLite file every run shares. A second run asks no teacher what
the first asked; two processes write it at once; a foreign file is one line; errors and
secrets never enter it; `persyn store` reads, exports (importable) and prunes it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.answer_store import (
    FILE_NAME,
    AnswerStore,
    AnswerStoreError,
    answer_store,
    store_location,
    user_cache_dir,
)
from persyn.cli import app
from persyn.config import parse_config
from persyn.pipeline import run_pipeline
from persyn.store import read_jsonl


def answer_row(pid: str, fp: str = "fp1", **fields: Any) -> dict[str, Any]:
    row = {
        "prompt_id": pid,
        "fp": fp,
        "prompt_fp": f"h-{pid}",
        "text": f"answer to {pid}",
        "reasoning": None,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "finish_reason": "stop",
        "truncated": False,
        "error": None,
    }
    return {**row, **fields}


def asked(pid: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {pid}"}]


def marker(run_dir: Path, stage: str) -> dict[str, Any]:
    return json.loads((run_dir / "stages" / f"{stage}.json").read_text())


def test_location_config_then_env_then_user_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PERSYN_STORE", str(tmp_path / "env.sqlite"))
    assert store_location(str(tmp_path / "cfg.sqlite")) == tmp_path / "cfg.sqlite"
    assert store_location(None) == tmp_path / "env.sqlite"
    assert store_location("none") is None and store_location("None") is None
    monkeypatch.setenv("PERSYN_STORE", "none")
    assert store_location(None) is None
    monkeypatch.delenv("PERSYN_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert store_location(None) == user_cache_dir() / FILE_NAME
    assert str(store_location(None)).endswith(f"persyn/{FILE_NAME}")


def test_config_key_resolves_against_the_config_file(tmp_path: Path) -> None:
    from persyn.config.paths import resolve_paths

    data = resolve_paths({"store": "cache/a.sqlite"}, tmp_path)
    assert data["store"] == str(tmp_path / "cache" / "a.sqlite")
    assert resolve_paths({"store": "none"}, tmp_path)["store"] == "none"


def test_keeps_answers_not_errors_and_no_secret(tmp_path: Path) -> None:
    store = AnswerStore(tmp_path / "a.sqlite")
    rows = [
        answer_row("p1"),
        answer_row("p2", text="", error="HTTP 500 from http://user:pw@host"),
        answer_row("p3", truncated=True, finish_reason="length"),
    ]
    assert store.put("t", "model?api_key=sk-abcdefghijklmnopqrstuvwx", rows, asked) == 2
    found = store.lookup("fp1", ["h-p1", "h-p2", "h-p3", "h-p4"])
    assert set(found) == {"h-p1", "h-p3"}  # the error is not kept: a retry may succeed
    assert found["h-p1"]["text"] == "answer to p1" and found["h-p3"]["truncated"] is True
    assert store.lookup("other-fp", ["h-p1"]) == {}
    dump = "\n".join(sqlite3.connect(tmp_path / "a.sqlite").iterdump())
    assert "sk-abcdefghijklmnopqrstuvwx" not in dump and "pw@host" not in dump


@pytest.mark.parametrize("content", [b"not a database at all\n" * 10, "foreign"])
def test_a_foreign_file_is_one_line_naming_it(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "answers.sqlite"
    if content == "foreign":
        sqlite3.connect(path).execute("CREATE TABLE users (name TEXT)").connection.commit()
    else:
        path.write_bytes(content)
    with pytest.raises(AnswerStoreError) as err:
        AnswerStore(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(app, ["store", "stats", "--store", str(path)])
    assert result.exit_code == 2 and str(path) in result.output.replace("\n", "")


WRITER = """
import sys
from persyn.answer_store import AnswerStore
store = AnswerStore(__import__("pathlib").Path(sys.argv[1]))
tag = sys.argv[2]
for batch in range(40):
    rows = [
        {"prompt_id": f"{tag}{batch}-{i}", "fp": tag, "prompt_fp": f"{batch}-{i}", "text": "x",
         "reasoning": None, "prompt_tokens": 1, "completion_tokens": 1,
         "finish_reason": "stop", "truncated": False, "error": None}
        for i in range(25)
    ]
    store.put(tag, "m", rows, lambda pid: [{"role": "user", "content": pid}])
    store.lookup(tag, [r["prompt_fp"] for r in rows])
"""


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"  # a new file: both also race to create the tables
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), tag])
        for tag in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = AnswerStore(path)
    assert {r["teacher"]: r["answers"] for r in store.stats()} == {"a": 1000, "b": 1000}
    assert len(store.lookup("a", [f"{b}-{i}" for b in range(40) for i in range(25)])) == 1000


def test_a_second_run_asks_no_teacher(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Another run directory, another alpha: every answer the first run paid for is read
    from the store, none is generated, and the same answers reach the dataset."""
    first = tmp_path / "first"
    data = tiny_run_config(tiny_lm_dir, first)
    run_pipeline(parse_config(data))
    generated = marker(first, "calibrate")["teachers"]
    assert all(t["generated"] == 16 and t["from_store"] == 0 for t in generated.values())

    second = tmp_path / "second"
    changed = {**data, "run_dir": str(second), "rewards": {**data["rewards"], "alpha": 0.9}}
    summary = run_pipeline(parse_config(changed))
    stats = marker(second, "calibrate")["teachers"]
    assert all(t["generated"] == 0 and t["from_store"] == 16 for t in stats.values()), stats
    answers = {
        name: {r["prompt_id"]: r["text"] for r in read_jsonl(first / "generations" / name)}
        for name in ("tiny-llm.jsonl", "solver-verbose.jsonl")
    }
    for name, texts in answers.items():
        again = {r["prompt_id"]: r["text"] for r in read_jsonl(second / "generations" / name)}
        assert {pid: again[pid] for pid in texts if pid in again} == {
            pid: texts[pid] for pid in texts if pid in again
        }
    # routed prompts: only those no run asked their teacher before are generated
    routed = marker(second, "generate")["teachers"]
    generated_now = sum(t["generated"] for t in routed.values())
    stored_now = sum(t["from_store"] for t in routed.values())
    routed_ids = set(json.loads((second / "calibration.json").read_text())["routed"])
    routed_rows = [
        r
        for path in (second / "generations").glob("*.jsonl")
        for r in read_jsonl(path)
        if r["prompt_id"] in routed_ids
    ]
    assert generated_now + stored_now == len(routed_rows) and stored_now > 0
    assert summary["answers_from_store"] == 16 * len(stats) + stored_now
    # the spend cap counts only what this run paid for: none of the stored answers
    from persyn.artifacts import RunArtifacts
    from persyn.spend import spent

    priced = {
        **changed,
        "teachers": [{**t, "cost_per_1k_output_tokens": 1.0} for t in data["teachers"]],
    }
    paid = sum(
        r["completion_tokens"] / 1000
        for path in (second / "generations").glob("*.jsonl")
        for r in read_jsonl(path)
        if not r.get("from_store")
    )
    assert spent(RunArtifacts(second), parse_config(priced)) == pytest.approx(paid)
    assert paid < spent(RunArtifacts(first), parse_config({**priced, "run_dir": str(first)}))

    off = tmp_path / "off"
    run_pipeline(parse_config({**data, "run_dir": str(off), "store": "none"}))
    assert all(t["generated"] == 16 for t in marker(off, "calibrate")["teachers"].values())


def test_cli_stats_export_import_prune(tiny_lm_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "answers.sqlite"
    store = answer_store(str(path))
    assert store is not None
    for teacher in ("solver-verbose", "solver-concise"):
        rows = [answer_row(f"p{i}", fp=teacher, prompt_fp=f"h{i}") for i in range(3)]
        store.put(teacher, f"model-{teacher}", rows, asked)
    runner = CliRunner()
    result = runner.invoke(app, ["store", "stats", "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert "solver-verbose" in result.output and "6 answers" in result.output

    out = tmp_path / "export.jsonl"
    result = runner.invoke(app, ["store", "export", str(out), "--store", str(path)])
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert len(records) == 6 and {r["model"] for r in records} == {
        "solver-verbose",
        "solver-concise",
    }
    # what calibration.source reads back: 3 prompts, both teachers answering each
    from persyn.calibration_import import load_import

    source = {"path": str(out), "preset": "persyn-store"}
    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", calibration={"source": source})
    data["teachers"] = data["teachers"][1:3]
    imported = load_import(parse_config(data))
    assert len(imported.prompts) == 3 and len(imported.answers) == 6
    assert {p.messages[-1]["content"] for p in imported.prompts} == {
        f"question p{i}" for i in range(3)
    }

    result = runner.invoke(
        app, ["store", "prune", "--teacher", "solver-concise", "--store", str(path)]
    )
    assert result.exit_code == 0 and "3 answers deleted" in result.output
    assert [r["teacher"] for r in store.stats()] == ["solver-verbose"]
    result = runner.invoke(app, ["store", "prune", "--store", str(path)])
    assert result.exit_code == 2  # no filter: never "delete everything" by accident
    result = runner.invoke(app, ["store", "stats", "--store", str(tmp_path / "typo.sqlite")])
    assert result.exit_code == 2 and "no answer store there yet" in result.output


def test_a_run_on_a_damaged_store_stops_with_one_line(tiny_lm_dir: Path, tmp_path: Path) -> None:
    import yaml

    damaged = tmp_path / "answers.sqlite"
    damaged.write_bytes(b"\x00garbage" * 512)
    data = tiny_run_config(tiny_lm_dir, tmp_path / "run", store=str(damaged))
    data["teachers"] = [
        {"name": n, "backend": "scripted", "model": n} for n in ("solver-verbose", "solver-quick")
    ]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(config), "--quiet"])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert line.startswith("error:") and str(damaged) in line and "Traceback" not in line
    assert damaged.read_bytes() == b"\x00garbage" * 512  # never overwritten

"""`options.batch: true` on the `openai` backend: the Batch API (JSONL upload, create, poll,
download) against a real Files/Batches server on 127.0.0.1 (`batch_server`) that answers
through a real llama.cpp server (no mock). Answers are 4 tokens, prompts few and short (a
short system prompt replaces the template's long default one)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from batch_server import batch_server
from conftest import tiny_run_config
from llama_server import LlamaServer

from persyn.config import TeacherConfig, parse_config
from persyn.executors import LocalExecutor
from persyn.pipeline import Run, run_stage
from persyn.stages.common import teacher_fingerprint
from persyn.store import read_jsonl
from persyn.teachers.base import Generation, Prompt, make_teacher
from persyn.teachers.openai_batch import request_digest

PROMPTS = [
    Prompt(f"p{i}", [{"role": "user", "content": text}])
    for i, text in enumerate(["2 + 2?", "A colour?", "Hello?"])
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with LlamaServer(tmp_path_factory.mktemp("llama")) as server:
        yield server


def smol(base_url: str, **options: Any) -> dict[str, Any]:
    return {
        "name": "smol",
        "backend": "openai",
        "model": "smollm2-135m-instruct",
        "system_prompt": "Be brief.",
        "generation": {"max_new_tokens": 4, "temperature": 0.0, "keep_truncated": True},
        "options": {"base_url": base_url, "max_retries": 0, "timeout_s": 60, **options},
    }


def generate(
    cfg: dict[str, Any], prompts: list[Prompt], resume_file: Path | None
) -> list[Generation]:
    teacher = make_teacher(TeacherConfig.model_validate(cfg))
    teacher.resume_file = resume_file
    teacher.load()
    try:
        return teacher.generate(prompts)
    finally:
        teacher.unload()


def test_a_batch_answers_like_requests_and_retries_expired_items(
    llama: LlamaServer, tmp_path: Path
) -> None:
    record = tmp_path / "batches" / "smol.calibrate.json"
    saved: list[Generation] = []
    with batch_server(llama.base_url) as server:
        server.expire_once = {"p1"}  # back expired once: answered by another batch
        server.fail_always = {"p2"}  # HTTP 500 each time: an error row after the retries
        cfg = smol(
            server.base_url,
            batch=True, batch_poll_seconds=0.05, batch_retries=1, batch_max_requests=2,
        )  # fmt: skip
        LocalExecutor().generate(TeacherConfig.model_validate(cfg), PROMPTS, saved.extend, record)
    direct = generate(smol(llama.base_url), PROMPTS[:1], None)

    results = sorted(saved, key=lambda g: g.prompt_id)
    assert [r.prompt_id for r in results] == ["p0", "p1", "p2"]
    for batched in results[:2]:
        assert batched.error is None and batched.text and 0 < batched.completion_tokens <= 4
        assert batched.finish_reason in {"stop", "length"} and batched.prompt_tokens > 0
    # the same request, so the same (greedy) answer as one request at a time
    assert (results[0].text, results[0].completion_tokens) == (
        direct[0].text,
        direct[0].completion_tokens,
    )
    last = server.created[-1]["id"]
    assert results[2].error == f"batch {last}: HTTP 500: upstream broke (after 2 batches)"
    # custom_id is the prompt id; batch_max_requests prompts a batch, one after another;
    # only the items that came back unanswered went again
    asked = [[r["custom_id"] for r in b["requests"]] for b in server.created]
    assert asked == [["p0", "p1"], ["p1"], ["p2"], ["p2"]]
    line = server.created[0]["requests"][0]
    assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
    assert line["body"]["max_tokens"] == 4 and line["body"]["messages"][-1]["role"] == "user"
    assert not record.exists()  # answered: the record is gone


@pytest.mark.parametrize("left", ["for other requests", "unknown to the server"])
def test_a_refused_batch_fails_its_rows_and_a_batch_left_that_cannot_resume_is_not_polled(
    left: str, tmp_path: Path
) -> None:
    record = tmp_path / "smol.json"
    with batch_server("http://127.0.0.1:1/v1") as server:  # nothing answered upstream
        server.refuse = "the model does not exist"
        cfg = smol(server.base_url, batch=True, batch_poll_seconds=0.05)
        body = make_teacher(TeacherConfig.model_validate(cfg)).request_body(PROMPTS[0])
        digest = "0" * 16 if left == "for other requests" else request_digest(body)
        # a batch an earlier run left: the prompts are sent anew
        record.write_text(json.dumps({"batch_id": "batch-old", "requests": {"p0": digest}}))
        results = generate(cfg, PROMPTS, record)
    [batch] = server.created
    # asked only whether the server still knows it, where the requests are the same
    assert server.polled.count("batch-old") == (left == "unknown to the server")
    assert len(batch["requests"]) == 3
    assert [r.error for r in results] == [
        f"batch {batch['id']} failed: invalid_request: the model does not exist"
    ] * 3  # refused as a whole: not retried
    assert not record.exists()


def test_batch_is_a_runtime_option() -> None:
    plain = TeacherConfig.model_validate(smol("http://127.0.0.1:1/v1"))
    batched = TeacherConfig.model_validate(
        smol("http://127.0.0.1:1/v1", batch=True, batch_poll_seconds=5, batch_max_requests=10)
    )
    assert teacher_fingerprint(plain) == teacher_fingerprint(batched)  # the same answers


# The stage, run in a process of its own so that the test can kill it while it polls.
STAGE = (
    "import sys; from persyn.config import load_config; "
    "from persyn.pipeline import Run, run_stage; "
    "run_stage(Run.open(load_config(sys.argv[1])), 'calibrate')"
)


def test_a_killed_run_polls_its_batch_again_instead_of_submitting_another(
    llama: LlamaServer, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    record = run_dir / "batches" / "smol.calibrate.json"
    with batch_server(llama.base_url) as server:
        teacher = smol(server.base_url, batch=True, batch_poll_seconds=0.05)
        solver = {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"}
        config = tiny_run_config(
            tiny_lm_dir, run_dir,
            teachers=[solver, teacher],
            prompts={"builtin": "demo-mix", "num_prompts": 4, "seed": 1},
            calibration={"size": 2, "seed": 0},
            max_error_rate=0.0,
        )  # fmt: skip
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))

        server.hold.clear()  # the batch stays in_progress: the stage polls until killed
        with (tmp_path / "stage.log").open("wb") as out:
            stage = subprocess.Popen(
                [sys.executable, "-c", STAGE, str(config_path)], stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + 120
            while not (record.exists() and server.polled):
                assert stage.poll() is None, (tmp_path / "stage.log").read_text()
                assert time.monotonic() < deadline, "the stage never polled a batch"
                time.sleep(0.05)
        finally:
            stage.kill()
            stage.wait()
        batch_id = json.loads(record.read_text())["batch_id"]
        assert [b["id"] for b in server.created] == [batch_id]
        polls_before = len(server.polled)

        server.hold.set()
        run_stage(Run.open(parse_config(config)), "calibrate")

    assert len(server.created) == 1  # polled again, not submitted again
    assert set(server.polled[polls_before:]) == {batch_id}
    rows = read_jsonl(run_dir / "generations" / "smol.jsonl")
    calibration = json.loads((run_dir / "calibration.json").read_text())["calibration"]
    assert sorted(r["prompt_id"] for r in rows) == sorted(calibration)  # each once
    assert all(r["error"] is None and r["text"] for r in rows)
    assert not record.exists()

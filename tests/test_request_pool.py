"""The HTTP teacher's request pool and teachers generating at the same time, through a
proxy (`http_proxy.py`) that delays requests, hangs, or answers 429 itself, and records
what reached it. The controller's timing tests let the proxy answer (a real HTTP server,
the real openai client, delays to a tenth of a second); the end-to-end failure and resume
test goes through to a real llama.cpp server (4-token answers)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config
from http_proxy import Action, Hit, Proxy
from llama_server import LlamaServer, free_port

from persyn.config import TeacherConfig, parse_config
from persyn.pipeline import Run, StageError, run_stage
from persyn.stages.lanes import lanes
from persyn.store import read_jsonl
from persyn.teachers.base import Generation, Prompt, make_teacher

CALIBRATION = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with LlamaServer(tmp_path_factory.mktemp("llama")) as running:
        yield running


def upstream(server: LlamaServer) -> str:
    return server.base_url.removesuffix("/v1")


def teacher_config(name: str, base_url: str, **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "model": "smollm2-135m-instruct",
        "generation": {"max_new_tokens": 4, "keep_truncated": True},
        # a loaded machine's llama.cpp server can take a minute for its first answer
        "options": {"base_url": base_url, "timeout_s": 180, "max_retries": 0, **options},
    }


def prompts(*texts: str) -> list[Prompt]:
    return [Prompt(f"p{i}", [{"role": "user", "content": t}]) for i, t in enumerate(texts)]


def streamed(base_url: str, items: list[Prompt], **options: Any) -> list[tuple[Generation, float]]:
    """Each generation with the time it came out of the teacher's stream."""
    teacher = make_teacher(TeacherConfig.model_validate(teacher_config("t", base_url, **options)))
    teacher.load()
    try:
        return [(g, time.monotonic()) for g in teacher.stream(items)]
    finally:
        teacher.unload()


def test_a_slow_request_delays_only_itself() -> None:
    slow = Action(delay_s=4.0)
    rule = lambda _, content: slow if "slow" in content else Action()  # noqa: E731
    with Proxy(None, rule) as proxy:
        # Two in flight, batches of two: chunk by chunk, the second chunk waited for the
        # slow request of the first.
        out = streamed(
            proxy.base_url, prompts("slow: hi", "hi", "hello", "hey", "yo"), concurrency=2
        )
    assert all(g.error is None for g, _ in out)
    order = [g.prompt_id for g, _ in out]
    assert order[-1] == "p0"  # the slow one came out last
    slow_done = out[-1][1]
    assert all(done < slow_done - 1.0 for _, done in out[:-1])


def test_429_halves_in_flight_then_it_recovers(capsys: pytest.CaptureFixture[str]) -> None:
    # The first four requests (all in flight at once) are throttled; the rest are held
    # 0.3 s at the proxy so that what is in flight shows there.
    rule = lambda index, _: (  # noqa: E731
        Action(delay_s=0.3, status=429, retry_after=0.2) if index < 4 else Action(delay_s=0.3)
    )
    with Proxy(None, rule) as proxy:
        out = streamed(proxy.base_url, prompts(*[f"say {i}" for i in range(16)]),
                       concurrency=4, max_retries=2)  # fmt: skip
    assert all(g.error is None for g, _ in out)
    hits = proxy.hits
    assert proxy.max_in_flight(hits[:4]) == 4
    after = hits[4:]
    assert proxy.max_in_flight(after[:4]) <= 2  # halved, once for the four 429s
    assert proxy.max_in_flight(after[-6:]) == 4  # grown back to `concurrency`
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert said == (
        "teacher 't': the server throttled 4 times (HTTP 429/503); requests in flight now 4 of 4"
    )


def test_retry_after_pauses_every_new_request() -> None:
    rule = lambda index, _: (  # noqa: E731
        Action(status=429, retry_after=1.5) if index == 0 else Action(delay_s=0.2)
    )
    with Proxy(None, rule) as proxy:
        out = streamed(proxy.base_url, prompts("a", "b", "c", "d"), concurrency=2, max_retries=1)
    assert all(g.error is None for g, _ in out)
    throttled, *rest = proxy.hits
    assert throttled.status == 429
    # the request in flight with it went on; nothing new started during the pause
    started_later = [h for h in rest if h.arrived > throttled.arrived + 0.1]
    assert len(started_later) == 3
    assert all(h.arrived >= throttled.finished + 1.4 for h in started_later)


def test_requests_per_minute_spaces_request_starts() -> None:
    with Proxy(None) as proxy:
        out = streamed(proxy.base_url, prompts("a", "b", "c", "d"), concurrency=4,
                       requests_per_minute=120)  # fmt: skip
    assert all(g.error is None for g, _ in out)
    starts = [h.arrived for h in proxy.hits]
    assert len(starts) == 4
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(starts))


def test_tokens_per_minute_holds_requests_until_earlier_ones_settle() -> None:
    # Each request is estimated at 400 chars / 4 + 4 max_new_tokens = 104 tokens of a
    # 120-token minute; the server reports 4 used, which frees the rest when it answers.
    with Proxy(None, lambda *_: Action(delay_s=0.3)) as proxy:
        out = streamed(proxy.base_url, prompts(*["x" * 400] * 3), concurrency=4,
                       tokens_per_minute=120)  # fmt: skip
    assert all(g.error is None for g, _ in out)
    assert len(proxy.hits) == 3 and proxy.max_in_flight() == 1
    # (without the limit all three are in flight at once: the proxy holds each 0.3 s)


def test_a_stuck_request_fails_alone_with_one_line_after_timeout() -> None:
    stuck = Action(hang_s=5.0)
    rule = lambda _, content: stuck if "stuck" in content else Action()  # noqa: E731
    with Proxy(None, rule) as proxy:
        out = dict((g.prompt_id, g) for g, _ in
                   streamed(proxy.base_url, prompts("stuck", "a", "b"), concurrency=2,
                            timeout_s=2))  # fmt: skip
        url = proxy.base_url
    assert out["p0"].error == (
        f"no response from {url} within timeout_s=2.0 (1 tries); raise options.timeout_s "
        "or check the server's load"
    )
    assert out["p1"].error is None and out["p2"].error is None


def run_config(tiny_lm_dir: Path, run_dir: Path, *teachers: dict[str, Any]) -> Any:
    solver = {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"}
    return parse_config(
        tiny_run_config(
            tiny_lm_dir, run_dir,
            teachers=[solver, *teachers],
            prompts={"builtin": "demo-mix", "num_prompts": 8, "seed": 1},
            calibration={"size": CALIBRATION, "seed": 0},
            max_error_rate=0.0,
        )
    )  # fmt: skip


def overlapping(a: list[Hit], b: list[Hit]) -> bool:
    return any(x.arrived < y.finished and y.arrived < x.finished for x in a for y in b)


@pytest.mark.parametrize(
    ("parallel", "max_cost", "at_once"),
    [(None, None, True), (False, None, False), (None, 100.0, False)],
)
def test_teachers_on_two_servers_calibrate_at_the_same_time(
    tiny_lm_dir: Path, tmp_path: Path, parallel: bool | None, max_cost: float | None, at_once: bool
) -> None:
    hold = lambda *_: Action(delay_s=0.3)  # noqa: E731
    with Proxy(None, hold) as one, Proxy(None, hold) as two:
        teachers = [
            {**teacher_config(name, proxy.base_url, concurrency=2), "parallel": parallel}
            for name, proxy in (("smol-one", one), ("smol-two", two))
        ]
        cfg = run_config(tiny_lm_dir, tmp_path / "run", *teachers)
        run_stage(Run.open(cfg.model_copy(update={"max_cost": max_cost})), "calibrate")
    assert len(one.hits) == len(two.hits) == CALIBRATION
    # `openai` teachers each generate in a lane of their own; `parallel: false` puts them
    # in the shared lane, one after the other, and so does a spend cap
    assert overlapping(one.hits, two.hits) == at_once


def test_local_engines_share_one_lane_and_each_server_gets_its_own() -> None:
    def teacher(name: str, backend: str, model: str = "m", **settings: Any) -> TeacherConfig:
        return TeacherConfig(name=name, backend=backend, model=model, **settings)

    def api(name: str, url: str, model: str = "m", **settings: Any) -> TeacherConfig:
        return teacher(name, "openai", model, options={"base_url": url}, **settings)

    pool = [
        teacher("hf-a", "hf"),
        api("api-a", "http://a:8000/v1"),
        teacher("solver", "scripted"),
        api("api-b", "http://b:8000/v1"),
        api("api-a-steps", "http://a:8000/v1/"),  # the same server's model: turns
        api("api-a-other", "http://a:8000/v1", model="other"),
        api("api-a-forced", "http://a:8000/v1", parallel=True),
        api("api-b-local", "http://b:8000/v1", parallel=False),
        teacher("hf-remote", "hf", parallel=True),
    ]
    assert [[t.name for t in group] for group in lanes(pool)] == [
        ["hf-a", "solver", "api-b-local"],
        ["api-a", "api-a-steps"],
        ["api-b"],
        ["api-a-other"],
        ["api-a-forced"],
        ["hf-remote"],
    ]


@pytest.mark.parametrize(
    "through",
    [
        "proxy",
        # ~95 s measured on the shared, loaded 2 cores (about 10 s a llama.cpp answer)
        pytest.param("llama.cpp", marks=pytest.mark.slow),
    ],
)
def test_a_dead_server_fails_its_rows_only_and_a_rerun_retries_just_those(
    request: pytest.FixtureRequest, tiny_lm_dir: Path, tmp_path: Path, through: str
) -> None:
    """`through`: whom the live proxies forward to: nobody (they answer) or a real
    llama.cpp server."""
    target = upstream(request.getfixturevalue("server")) if through == "llama.cpp" else None
    dead_port = free_port()  # nothing listens there
    dead_url = f"http://127.0.0.1:{dead_port}/v1"
    run_dir = tmp_path / "run"
    with Proxy(target) as alive:
        cfg = run_config(
            tiny_lm_dir, run_dir,
            teacher_config("smol-alive", alive.base_url),
            teacher_config("smol-dead", dead_url),
        )  # fmt: skip
        with pytest.raises(StageError) as failure:
            run_stage(Run.open(cfg), "calibrate")
        message = str(failure.value)
        assert "\n" not in message
        assert message.startswith(f"calibrate: teacher 'smol-dead': {CALIBRATION}/{CALIBRATION}")
        assert f"connection to {dead_url} failed after 1 tries" in message
        # the teacher beside it finished every row
        alive_rows = read_jsonl(run_dir / "generations" / "smol-alive.jsonl")
        assert len(alive_rows) == CALIBRATION and all(r["error"] is None for r in alive_rows)
        asked_alive = len(alive.hits)

        with Proxy(target, port=dead_port) as revived:
            run_stage(Run.open(cfg), "calibrate")
        assert len(revived.hits) == CALIBRATION  # only the failed rows were asked again
        assert len(alive.hits) == asked_alive
    dead_rows = read_jsonl(run_dir / "generations" / "smol-dead.jsonl")
    latest = {r["prompt_id"]: r for r in dead_rows}
    assert len(latest) == CALIBRATION and all(r["error"] is None for r in latest.values())

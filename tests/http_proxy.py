"""A small HTTP proxy on 127.0.0.1 in front of a real server (the llama.cpp server of
`llama_server.py`), for tests and benchmarks of the HTTP teachers: it records every
request (arrival, end, how many were in flight) and, as its `rule` says per request,
delays it, hangs, or answers 429 / 503 itself instead of forwarding.

Without an upstream it answers every chat completion itself ("ok", 1 token): the tests
of the request controller time requests to a tenth of a second, which a llama.cpp server
sharing two loaded cores with other work (10 s a request seen) cannot hold."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass(frozen=True)
class Action:
    """What the proxy does with one request: wait `delay_s`, then answer `status` itself
    (with `Retry-After: retry_after` when set) or forward it; `hang_s`: wait that long and
    close the connection without an answer."""

    delay_s: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    hang_s: float | None = None


@dataclass
class Hit:
    """One request as the proxy saw it: its arrival order, the last user message, the
    times it arrived and was answered, and the requests in flight when it arrived (itself
    included)."""

    index: int
    content: str
    arrived: float
    in_flight: int
    finished: float = float("inf")
    status: int = 0


Rule = Callable[[int, str], Action]

ANSWER = {
    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}  # fmt: skip


class Proxy(ThreadingHTTPServer):
    daemon_threads = True
    # listen backlog: the default 5 drops the connections a client opens at once beyond it,
    # which then arrive a SYN retry (1 s) late
    request_queue_size = 128

    def __init__(self, upstream: str | None, rule: Rule | None = None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        # e.g. http://127.0.0.1:PORT (no /v1); None: answer itself
        self.upstream = upstream.rstrip("/") if upstream else None
        self.rule: Rule = rule or (lambda index, content: Action())
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.client = httpx.Client(timeout=120)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> Proxy:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.client.close()

    def max_in_flight(self, hits: list[Hit] | None = None) -> int:
        return max((h.in_flight for h in (self.hits if hits is None else hits)), default=0)


class _Handler(BaseHTTPRequestHandler):
    server: Proxy
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # `or`: a rate-limit probe (Curator's) sends no messages
        messages = json.loads(body).get("messages") or [{}]
        content = str(messages[-1].get("content", ""))
        proxy = self.server
        with proxy.lock:
            proxy.in_flight += 1
            hit = Hit(len(proxy.hits), content, time.monotonic(), proxy.in_flight)
            proxy.hits.append(hit)
        action = proxy.rule(hit.index, content)
        time.sleep(action.delay_s)
        if action.hang_s is not None:
            time.sleep(action.hang_s)
            self._done(hit, 0)
            self.close_connection = True
            return
        headers: dict[str, str] = {}
        if action.status is not None:
            status = action.status
            payload = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}})
            content_bytes = payload.encode()
            if action.retry_after is not None:
                headers["Retry-After"] = f"{action.retry_after:g}"
        elif proxy.upstream is None:
            status, content_bytes = 200, json.dumps(ANSWER).encode()
        else:
            upstream = proxy.client.post(
                proxy.upstream + self.path,
                content=body,
                headers={"Content-Type": "application/json"},
            )
            status, content_bytes = upstream.status_code, upstream.content
        self._done(hit, status)  # before the answer leaves: the client may send the next
        self._send(status, content_bytes, headers)

    def _done(self, hit: Hit, status: int) -> None:
        with self.server.lock:
            self.server.in_flight -= 1
            hit.finished, hit.status = time.monotonic(), status

    def _send(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output

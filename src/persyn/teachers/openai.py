"""OpenAI-compatible chat-completions backend (`backend: openai`): OpenAI itself, vLLM's
`vllm serve`, llama.cpp's server, SGLang, TGI, or any hosted provider with that API.

Requests go out from the official async `openai` client through a `RequestPool`
(`persyn.teachers.pool`): up to `concurrency` in flight over the whole work list, each row
handed on as it finishes, so a slow request delays only itself. The pool, not the client,
retries (the client's own retries are off, or they would hide a 429 from it): a 429 or
503 halves the in-flight limit (it grows back by about one per round of successes) and
pauses new requests for the server's `Retry-After`; 408/409/5xx, timeouts and connection
errors are retried with exponential backoff (0.5 s doubling, capped at 8 s, minus up to 25%
jitter). A request that still fails becomes an error row: the stage keeps every finished
row, fails only above `max_error_rate`, and a rerun retries just the failed prompts.

`options` keys (all optional):

    base_url     endpoint root, e.g. http://gpu-node-3:8000/v1 (default: api.openai.com);
                 a query (`...?key=KEY`) is sent with every request
    api_key_env  NAME of the environment variable holding the key (the key never goes in
                 the config, the run directory, the logs or an error message); unset: no
                 key, for local servers
    concurrency  most requests in flight at once (default 8); throttling lowers the limit
                 for a while, never above this
    requests_per_minute
                 most requests started per minute, evenly spaced (default: no limit)
    tokens_per_minute
                 most tokens (prompt + completion) per minute: each request is charged
                 its estimate (prompt characters / 4 + max_new_tokens) when it starts and
                 settled with the server's `usage` (default: no limit)
    timeout_s    per-request timeout in seconds (default 120): a stuck request fails
                 (and is retried) after it
    max_retries  retries per request after the first try (default 4), throttles included
    max_consecutive_failures
                 after this many requests in a row could not reach the server (connection
                 refused, timed out; each after its retries) the teacher stops sending: its
                 remaining prompts become error rows that a rerun retries (default 8)
    extra_body   extra JSON fields for every request (e.g. vLLM's `top_k`,
                 `chat_template_kwargs`, OpenAI's `reasoning_effort`); part of the
                 teacher's fingerprint
    token_param  the request field that carries `generation.max_new_tokens`: `max_tokens`
                 (default; every compatible server) or `max_completion_tokens` (what
                 OpenAI's reasoning models accept instead); part of the fingerprint
    batch        true: through the Batch API instead (`persyn.teachers.openai_batch`, with
                 `batch_max_requests`, `batch_poll_seconds`, `batch_completion_window`,
                 `batch_retries`)

Reasoning models: set `token_param: max_completion_tokens` and `generation.temperature:
null` / `top_p: null` (a null parameter is not sent: the server's default applies). The
reasoning a server returns apart (`message.reasoning_content`, as DeepSeek's API and vLLM
with a reasoning parser send it, or `message.reasoning`) is kept in the row's
`reasoning`, apart from the answer; else a leading think block of the text is split off
(`generation.think_tags`).

`model` is the model name the server knows. Tokens used come from the response's `usage`;
the summary's cost per teacher is prompt tokens x `cost_per_1k_input_tokens` / 1000
plus completion tokens x `cost_per_1k_output_tokens` / 1000.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import Field

from persyn.config import ConfigError, TeacherConfig, backend_options
from persyn.progress import log, warn
from persyn.redact import looks_like_key, remember_secret
from persyn.teachers.base import Generation, Prompt, Teacher
from persyn.teachers.openai_batch import BATCH_OPTIONS, BatchOptions, BatchRunner
from persyn.teachers.openai_errors import classify, describe_failure
from persyn.teachers.pool import PoolSettings, Request, RequestFailed, RequestPool


class OpenAIOptions(BatchOptions):
    base_url: str = Field("https://api.openai.com/v1", description="Endpoint root (.../v1).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable with the API key; unset: no key."
    )
    concurrency: int = Field(
        8, gt=0, description="Most requests in flight at once (429/503 lower it for a while)."
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="Most requests started per minute, evenly spaced; null: no limit."
    )
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="Most prompt + completion tokens per minute (estimated at the start, "
        "settled with the server's usage); null: no limit.",
    )
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries per request after the first try.")
    max_consecutive_failures: int = Field(
        8,
        gt=0,
        description="Stop the teacher after this many requests in a row could not reach the "
        "server; its remaining prompts become error rows that a rerun retries.",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra JSON fields sent with every request."
    )
    token_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="Request field for generation.max_new_tokens; reasoning models of "
        "OpenAI's API take max_completion_tokens.",
    )


# Servers without authentication still need a non-empty bearer token in the client.
_NO_KEY = "no-key"


class OpenAITeacher(Teacher):
    requires: ClassVar[tuple[str, ...]] = ("openai",)
    extra: ClassVar[str | None] = "openai"
    # Where and how fast the model is served does not change what it answers.
    runtime_options: ClassVar[tuple[str, ...]] = (
        "base_url",
        "api_key_env",
        "concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "timeout_s",
        "max_retries",
        "max_consecutive_failures",
        *BATCH_OPTIONS,
    )

    # Requests go to a server: it can generate alongside other teachers.
    parallel: ClassVar[bool] = True

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        self.options = backend_options(OpenAIOptions, cfg)
        self._api_key()  # fail at `persyn validate`, not after the first stages ran
        # The client appends the request path to base_url as text, so a query there would
        # end up inside the path (a 404): it goes with every request as the client's
        # default query instead.
        url = urlsplit(self.options.base_url)
        self._endpoint = urlunsplit(url._replace(query="", fragment=""))
        self._query = dict(parse_qsl(url.query, keep_blank_values=True))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._pool: RequestPool | None = None
        self._unreachable = 0  # requests in a row that could not reach the server
        self._stopped: str | None = None  # the error of every prompt after it stopped
        self._said_stopped = False

    @classmethod
    def server(cls, cfg: TeacherConfig) -> str:
        """The endpoint and the model: teachers asking one server's model (the same model
        with other system prompts) take turns; other models of a hosted API do not."""
        url = urlsplit(str(cfg.options.get("base_url", OpenAIOptions().base_url)))
        return f"{url.scheme}://{url.netloc}{url.path.rstrip('/')} {cfg.model}"

    def _api_key(self) -> str:
        name = self.options.api_key_env
        if name is None:
            return _NO_KEY
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or looks_like_key(name):
            # Never echo it: this is most likely the key itself, pasted in the wrong place.
            raise ConfigError(
                f"teacher {self.cfg.name!r}: options.api_key_env must be the NAME of the "
                "environment variable holding the key (e.g. OPENAI_API_KEY), and the value "
                "given looks like a key itself; remove it from the config (rotate the key if "
                "the config was shared), export OPENAI_API_KEY=<key> and set "
                "api_key_env: OPENAI_API_KEY"
            )
        key = os.environ.get(name, "")
        if not key:
            raise ConfigError(
                f"teacher {self.cfg.name!r}: environment variable {name} (options.api_key_env) "
                f"is not set; export {name}=... before running"
            )
        remember_secret(key)  # scrubbed from every message and artifact from now on
        return key

    def load(self) -> None:
        from openai import AsyncOpenAI

        # One loop for the teacher's lifetime, so the client's connection pool is reused
        # across batches (a client is bound to the loop it first ran on).
        self._loop = asyncio.new_event_loop()
        self._client = AsyncOpenAI(
            base_url=self._endpoint,
            default_query=self._query or None,
            api_key=self._api_key(),
            timeout=self.options.timeout_s,
            # the pool retries requests: it must see every 429; the Batch API's calls (upload,
            # create, poll) have no pool and keep the client's retries
            max_retries=self.options.max_retries if self.options.batch else 0,
        )
        options = self.options
        self._pool = RequestPool(
            PoolSettings(
                options.concurrency,
                options.max_retries,
                options.requests_per_minute,
                options.tokens_per_minute,
            ),
            classify,
        )
        self._unreachable, self._stopped, self._said_stopped = 0, None, False
        self._batches = BatchRunner(
            self._client, self.options, self.cfg.name, self.request_body, self.answer,
            self.resume_file,
        )  # fmt: skip

    @property
    def batch_size(self) -> int:
        # A batch holds as many requests as it may: each one waits for the whole batch.
        return self.options.batch_max_requests if self.options.batch else self.cfg.batch_size

    def unload(self) -> None:
        if self._loop is None:
            return
        self._batches.finish()
        self._loop.run_until_complete(self._client.close())
        self._loop.close()
        self._loop = self._client = self._pool = None

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        if self.options.batch:
            if self._loop is None:
                raise RuntimeError(f"teacher {self.cfg.name!r}: call load() before generate()")
            return self._loop.run_until_complete(self._batches.generate(prompts))
        by_id = {g.prompt_id: g for g in self.stream(prompts)}
        return [by_id[p.id] for p in prompts]

    def stream(self, prompts: list[Prompt]) -> Iterator[Generation]:
        """Every prompt's generation as it finishes, `concurrency` requests in flight over
        the whole list (the pool's limit); Batch API jobs one `batch_size` at a time."""
        if self.options.batch:
            yield from super().stream(prompts)
            return
        if self._loop is None or self._pool is None:
            raise RuntimeError(f"teacher {self.cfg.name!r}: call load() before generate()")
        loop, pool = self._loop, self._pool
        results = pool.stream(prompts, self._one)
        throttles = pool.throttles
        try:
            while True:
                try:
                    yield loop.run_until_complete(anext(results))
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(results.aclose())  # cancels what is still in flight
            if pool.throttles > throttles:
                log(
                    f"teacher {self.cfg.name!r}: the server throttled "
                    f"{pool.throttles - throttles} times (HTTP 429/503); requests in flight "
                    f"now {pool.allowed} of {self.options.concurrency}"
                )

    async def _one(self, prompt: Prompt) -> Generation:
        assert self._pool is not None
        if self._stopped is not None:
            self._say_stopped()
            return Generation(prompt.id, error=self._stopped)
        request = Request(
            lambda: self._request(prompt),
            tokens=self.token_estimate(prompt),
            used=lambda g: g.prompt_tokens + g.completion_tokens,
        )
        try:
            generation = await self._pool.call(request)
        except RequestFailed as failed:
            options = self.options
            error = describe_failure(
                failed.error, failed.tries, options.base_url, options.timeout_s, options.api_key_env
            )
            self._count_failure(failed.error, error)
            return Generation(prompt.id, error=error)
        self._unreachable = 0
        return generation

    def token_estimate(self, prompt: Prompt) -> int:
        """What a request will cost against `tokens_per_minute` before the server says:
        about four characters a token, plus the longest answer."""
        chars = sum(len(m["content"]) for m in self.chat(prompt))
        return chars // 4 + self.cfg.generation.max_new_tokens

    def _count_failure(self, err: BaseException, error: str) -> None:
        """Stop sending after `max_consecutive_failures` requests in a row found no server:
        a server that is down would otherwise cost every prompt all its retries."""
        import openai

        if not isinstance(err, openai.APIConnectionError):  # the server answered
            self._unreachable = 0
            return
        self._unreachable += 1
        limit = self.options.max_consecutive_failures
        if self._unreachable >= limit and self._stopped is None:
            self._stopped = (
                f"not sent: the teacher stopped after {limit} requests in a row could not "
                f"reach the server (last: {error}); a rerun retries this prompt"
            )

    def _say_stopped(self) -> None:
        """One warning, at the first prompt not sent (none when the failures were the last
        prompts: the stage's error line says it all)."""
        if not self._said_stopped:
            self._said_stopped = True
            warn(
                f"teacher {self.cfg.name!r}: stopped after "
                f"{self.options.max_consecutive_failures} requests in a row could not reach "
                f"{self.options.base_url} (options.max_consecutive_failures); "  # warn scrubs it
                "its remaining prompts are error rows that a rerun retries"
            )

    async def _request(self, prompt: Prompt) -> Generation:
        response = await self._client.chat.completions.create(
            model=self.cfg.model,
            messages=self.chat(prompt),
            extra_body=self.options.extra_body or None,
            **self.sampling(),
        )
        return self.answer(prompt.id, response)

    def request_body(self, prompt: Prompt) -> dict[str, Any]:
        """The JSON body of `prompt`'s request, as a Batch API line carries it."""
        body = {"model": self.cfg.model, "messages": self.chat(prompt), **self.sampling()}
        return {**body, **self.options.extra_body}

    def answer(self, prompt_id: str, response: Any) -> Generation:
        """The Generation of a `ChatCompletion`."""
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = response.usage
        return Generation(
            prompt_id,
            text.strip(),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason if choice else None,
            reasoning=sent_reasoning(choice.message) if choice else None,
        )

    def sampling(self) -> dict[str, Any]:
        """The request's generation fields; a parameter set to null is left out, so that
        the server's default applies (reasoning models refuse `temperature` and `top_p`)."""
        gen = self.cfg.generation
        fields = {
            self.options.token_param: gen.max_new_tokens,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "seed": gen.seed,
        }
        return {k: v for k, v in fields.items() if v is not None}


def sent_reasoning(message: Any) -> str | None:
    """The reasoning a server sent apart from the answer: `reasoning_content` (DeepSeek's
    API, vLLM's reasoning parsers) or `reasoning` (later vLLM, other providers); the
    client keeps fields it does not know as attributes."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None

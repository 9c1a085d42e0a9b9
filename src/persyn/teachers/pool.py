"""A bounded, adaptive pool of requests to one server, for the HTTP teachers.

`RequestPool.stream` keeps up to the in-flight limit of requests going over a whole work
list and yields each result as it finishes: a slow request delays only itself, never a
chunk of others. Every request is admitted by one controller:

* in flight: additive increase, multiplicative decrease (AIMD, as TCP does). A throttled
  answer (HTTP 429, or 503 where the server is overloaded) halves the limit, once per
  round of requests: answers to requests sent before the last cut do not cut again. Each
  success adds 1/limit, so the limit grows back by about one per round up to the
  configured `concurrency`.
* pauses: a throttled answer's `Retry-After` (else exponential backoff) holds every new
  request until it has passed, not only the retried one.
* rates: `requests_per_minute` spaces request starts evenly; `tokens_per_minute` is a
  token bucket debited with each request's estimate and settled with what the server
  reports it used.

Failed requests are retried here, not in an HTTP client (whose own retries would hide a
429 from the controller): throttles and transient failures (408, 409, 5xx, timeouts,
lost connections) up to `max_retries` times, with backoff; the last failure is raised to
the caller with the number of tries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Backoff of a retried request without Retry-After: 0.5 s doubling, capped at 8 s, minus up
# to 25% jitter (the openai client's own schedule, which these retries replace).
BACKOFF_S = 0.5
BACKOFF_MAX_S = 8.0
# Longest Retry-After honoured (as the openai client does): a longer one is a day's quota.
RETRY_AFTER_MAX_S = 60.0


@dataclass(frozen=True)
class PoolSettings:
    concurrency: int  # the in-flight ceiling AIMD grows back to
    max_retries: int = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(frozen=True)
class Verdict:
    """What a failed request means for the pool: retry it or not; a throttle (cut the
    in-flight limit) or not; how long the server asked to wait (`Retry-After`)."""

    retry: bool
    throttled: bool = False
    wait_s: float | None = None


class RequestFailed(Exception):
    """A request that failed for good: `error` the last failure, after `tries` tries."""

    def __init__(self, error: BaseException, tries: int) -> None:
        super().__init__(str(error))
        self.error, self.tries = error, tries


@dataclass
class Request(Generic[Result]):
    """One request: `send` makes an attempt; `tokens` estimates what it will cost against
    `tokens_per_minute`; `used` reads what a result did cost (None: the estimate stands)."""

    send: Callable[[], Awaitable[Result]]
    tokens: int = 0
    used: Callable[[Result], int | None] = lambda _: None


class _Crash:
    def __init__(self, error: Exception) -> None:
        self.error = error


_DONE = object()  # a worker's last item


class RequestPool:
    """The controller of one teacher's requests; its state (limit, pauses, rates) lasts
    across `stream` calls, so consecutive batches share what the server told it."""

    def __init__(
        self,
        settings: PoolSettings,
        classify: Callable[[BaseException], Verdict],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.classify = classify
        self.clock = clock
        self.limit = float(settings.concurrency)
        self.in_flight = 0
        self.throttles = 0  # throttled answers seen (each retried or failed)
        self._cut_at = -1.0  # when the limit was last cut
        self._resume_at = 0.0  # no request starts before this (Retry-After, backoff)
        self._next_start = 0.0  # requests_per_minute spacing
        self._tokens = float(settings.tokens_per_minute or 0)
        self._tokens_at = clock()
        self._changed: asyncio.Condition | None = None

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now."""
        return max(1, int(self.limit))

    async def stream(
        self,
        items: Iterable[Item],
        run: Callable[[Item], Awaitable[Result]],
    ) -> AsyncIterator[Result]:
        """`run(item)` for every item, at most `concurrency` at once (each `run` awaits
        `call` for its requests, which holds it to the current limit); results in the
        order they finish. `run` must not raise: a failure is its result."""
        pending = iter(items)
        finished: asyncio.Queue[object] = asyncio.Queue()

        async def worker() -> None:
            try:
                for item in pending:  # shared: each item goes to exactly one worker
                    await finished.put(await run(item))
            except Exception as err:  # a bug in `run`: raised below, not a hang
                await finished.put(_Crash(err))
            await finished.put(_DONE)

        workers = [asyncio.ensure_future(worker()) for _ in range(self.settings.concurrency)]
        try:
            done = 0
            while done < len(workers):
                got = await finished.get()
                if got is _DONE:
                    done += 1
                elif isinstance(got, _Crash):
                    raise got.error
                else:
                    yield got  # type: ignore[misc]
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def call(self, request: Request[Result]) -> Result:
        """Send `request` when the controller admits it, retrying throttles and transient
        failures; raises `RequestFailed` with the last failure."""
        tries = 0
        while True:
            started = await self._admit(request.tokens)
            tries += 1
            try:
                result = await request.send()
            except Exception as err:
                verdict = self.classify(err)
                await self._failed(started, verdict, tries)
                if not verdict.retry or tries > self.settings.max_retries:
                    raise RequestFailed(err, tries) from err
                if not verdict.throttled:  # a throttle paused every request (`_failed`)
                    await asyncio.sleep(self._backoff(tries, verdict))
                continue
            await self._succeeded(request.tokens, request.used(result))
            return result

    # -- the controller ----------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        # made on first use, inside the loop that runs the requests
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _admit(self, tokens: int) -> float:
        """Wait for a free slot, the end of any pause and the rate limits; returns the
        request's start time."""
        changed = self._condition()
        async with changed:
            while True:
                now = self.clock()
                wait = max(self._resume_at - now, self._next_start - now, self._token_wait(tokens))
                if wait <= 0 and self.in_flight < self.allowed:
                    break
                with suppress(TimeoutError):  # a release, or the end of the wait, may admit it
                    await asyncio.wait_for(changed.wait(), wait if wait > 0 else None)
            self.in_flight += 1
            if self.settings.requests_per_minute:
                self._next_start = now + 60.0 / self.settings.requests_per_minute
            if self.settings.tokens_per_minute:
                self._tokens -= tokens
            return now

    def _token_wait(self, tokens: int) -> float:
        """Seconds until the token bucket holds `tokens` (or is full, for a request larger
        than a minute's worth)."""
        per_minute = self.settings.tokens_per_minute
        if not per_minute:
            return 0.0
        now = self.clock()
        self._tokens = min(per_minute, self._tokens + (now - self._tokens_at) * per_minute / 60)
        self._tokens_at = now
        need = min(tokens, per_minute)
        return 0.0 if self._tokens >= need else (need - self._tokens) * 60 / per_minute

    async def _succeeded(self, estimate: int, used: int | None) -> None:
        changed = self._condition()
        async with changed:
            self.in_flight -= 1
            self.limit = min(float(self.settings.concurrency), self.limit + 1 / self.limit)
            if self.settings.tokens_per_minute and used is not None:
                self._tokens -= used - estimate  # the estimate was debited at the start
            changed.notify_all()

    async def _failed(self, started: float, verdict: Verdict, tries: int) -> None:
        changed = self._condition()
        async with changed:
            self.in_flight -= 1
            if verdict.throttled:
                self.throttles += 1
                if started > self._cut_at:  # one cut per round of requests
                    self.limit = max(1.0, self.limit / 2)
                    self._cut_at = self.clock()
                pause = self._backoff(tries, verdict)
                self._resume_at = max(self._resume_at, self.clock() + pause)
            changed.notify_all()

    @staticmethod
    def _backoff(tries: int, verdict: Verdict) -> float:
        """The server's Retry-After where it sent one, else exponential backoff."""
        if verdict.wait_s is not None:
            return verdict.wait_s
        return min(BACKOFF_S * 2 ** (tries - 1), BACKOFF_MAX_S) * (1 - 0.25 * random.random())


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, OpenAI's, or `Retry-After` in
    seconds or as an HTTP date), at most `RETRY_AFTER_MAX_S`; None when it did not say."""
    wait: float | None = None
    try:
        if headers.get("retry-after-ms"):
            wait = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after"):
            value = headers["retry-after"]
            try:
                wait = float(value)
            except ValueError:
                wait = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None
    return None if wait is None else min(max(wait, 0.0), RETRY_AFTER_MAX_S)

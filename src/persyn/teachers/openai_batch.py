"""The OpenAI Batch API for the `openai` backend (`options.batch: true`).

A `generate` call's prompts become one JSONL file of chat-completion requests (`custom_id`:
the prompt id), uploaded with purpose `batch`; a batch is created over it, polled until
it ends, and its output and error files are read back onto the prompts by `custom_id`.
OpenAI bills batches at half the price and answers within the completion window.

The batch id is written to the teacher's resume file in the run directory
(`RunArtifacts.batch_record`) before polling starts, with a hash of each request: a run
killed while it waited polls the same batch again on the rerun instead of paying for a
second one, as long as the requests are the same (a changed prompt or setting is sent
anew). The record is removed once the teacher's rows are saved.

Items that come back expired (`batch_expired`), not at all (the batch expired or ended
without them) or with a retryable HTTP status (408, 409, 429, 5xx) go into a new batch, at
most `batch_retries` times; then, like items refused outright, they are error rows with a
one-line error, which a rerun retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from persyn.config import Section
from persyn.progress import log, warn
from persyn.store import atomic_write_json
from persyn.teachers.base import Generation, Prompt

ENDPOINT = "/v1/chat/completions"
# A batch in one of these states changes no more.
ENDED = {"completed", "failed", "expired", "cancelled"}
# Per-item HTTP statuses worth another try (as the client retries them for a request).
RETRY_STATUSES = {408, 409, 429}


class BatchOptions(Section):
    """The `openai` backend's Batch API settings (runtime options: the same answers)."""

    batch: bool = Field(
        False,
        description="Send prompts through the Batch API (JSONL upload, batch, poll, "
        "download) instead of one request each.",
    )
    batch_max_requests: int = Field(
        50_000, gt=0, description="Requests per batch (OpenAI's limit is 50,000)."
    )
    batch_poll_seconds: float = Field(30.0, gt=0, description="Seconds between status polls.")
    batch_completion_window: str = Field(
        "24h", description="The batch's completion_window (OpenAI accepts 24h)."
    )
    batch_retries: int = Field(
        2,
        ge=0,
        description="New batches for items that came back expired, missing or with a "
        "retryable HTTP status; then they are error rows.",
    )


#: the option names, for the backend's `runtime_options`
BATCH_OPTIONS: tuple[str, ...] = tuple(BatchOptions.model_fields)

# prompt id -> the Generation, or (error, worth another batch)
Outcome = Generation | tuple[str, bool]


def request_digest(body: dict[str, Any]) -> str:
    """What identifies a request: a batch's answer is reused only for the same request."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BatchRunner:
    """One teacher's Batch API jobs, through its async `openai` client.

    `body(prompt)` is the chat-completion request of a prompt; `answer(prompt_id,
    completion)` the Generation of a `ChatCompletion`; `record` the resume file (None:
    nowhere, a killed run submits again)."""

    def __init__(
        self,
        client: Any,
        options: BatchOptions,
        teacher: str,
        body: Callable[[Prompt], dict[str, Any]],
        answer: Callable[[str, Any], Generation],
        record: Path | None,
    ) -> None:
        self.client = client
        self.options = options
        self.teacher = teacher
        self.body = body
        self.answer = answer
        self.record = record
        self.ended = False  # the last batch's results are in hand (its record may go)

    async def generate(self, prompts: list[Prompt]) -> list[Generation]:
        self.ended = False
        bodies = {p.id: self.body(p) for p in prompts}
        results: dict[str, Generation] = {}
        tries = dict.fromkeys(bodies, 0)
        resumed = await self._resumable(bodies)
        batch_id, asked = resumed or (await self._submit(bodies, list(bodies)), list(bodies))
        in_batch = set(asked)
        waiting = [pid for pid in bodies if pid not in in_batch]  # not in a resumed batch
        while True:
            outcomes = await self._collect(batch_id, asked)
            for pid in asked:
                outcome = outcomes[pid]
                if isinstance(outcome, Generation):
                    results[pid] = outcome
                    continue
                error, again = outcome
                tries[pid] += 1
                if again and tries[pid] <= self.options.batch_retries:
                    waiting.append(pid)
                else:
                    batches = f" (after {tries[pid]} batches)" if tries[pid] > 1 else ""
                    results[pid] = Generation(pid, error=error + batches)
            if not waiting:
                break
            log(f"teacher {self.teacher!r}: {len(waiting)} requests go into a new batch")
            asked, waiting = waiting, []
            batch_id = await self._submit(bodies, asked)
        self.ended = True
        return [results[p.id] for p in prompts]

    def finish(self) -> None:
        """Remove the resume file once the last batch's rows are saved (call it after the
        sink has them); a batch still running keeps it, for the rerun to poll."""
        if self.record is not None and self.ended:
            self.record.unlink(missing_ok=True)

    async def _resumable(self, bodies: dict[str, dict[str, Any]]) -> tuple[str, list[str]] | None:
        """(batch id, the prompts it asks as they are asked now) of the batch a killed run
        left, or None (none left, other requests, or the server no longer knows it)."""
        import openai

        if self.record is None or not self.record.is_file():
            return None
        try:
            record = json.loads(self.record.read_text())
            batch_id, requests = str(record["batch_id"]), dict(record["requests"])
        except (ValueError, KeyError, TypeError):
            warn(f"{self.record}: not a batch record; ignored, the prompts are sent anew")
            return None
        same = [pid for pid, body in bodies.items() if requests.get(pid) == request_digest(body)]
        if not same:
            warn(
                f"teacher {self.teacher!r}: batch {batch_id} of an earlier run asks none of "
                "these prompts as they are now; not polled (cancel it on the server if it "
                "still runs)"
            )
            return None
        try:
            await self.client.batches.retrieve(batch_id)
        except openai.NotFoundError:
            warn(
                f"teacher {self.teacher!r}: the server no longer knows batch {batch_id} of an "
                "earlier run; its prompts are sent anew"
            )
            return None
        log(f"teacher {self.teacher!r}: resuming batch {batch_id} ({len(same)} requests)")
        return batch_id, same

    async def _submit(self, bodies: dict[str, dict[str, Any]], ids: list[str]) -> str:
        """Upload the requests of `ids`, create their batch, record it; its id."""
        lines = "".join(
            json.dumps(
                {"custom_id": pid, "method": "POST", "url": ENDPOINT, "body": bodies[pid]},
                ensure_ascii=False,
            )
            + "\n"
            for pid in ids
        )
        upload = await self.client.files.create(
            file=("persyn-batch.jsonl", lines.encode(), "application/jsonl"), purpose="batch"
        )
        batch = await self.client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window=self.options.batch_completion_window,
        )
        if self.record is not None:  # before polling: a killed run polls it again
            requests = {pid: request_digest(bodies[pid]) for pid in ids}
            atomic_write_json(
                self.record,
                {"batch_id": batch.id, "input_file_id": upload.id, "requests": requests},
            )
        log(
            f"teacher {self.teacher!r}: batch {batch.id} submitted ({len(ids)} requests); "
            f"polling every {self.options.batch_poll_seconds:g} s"
        )
        return str(batch.id)

    async def _collect(self, batch_id: str, ids: list[str]) -> dict[str, Outcome]:
        """Wait for the batch to end; the outcome of each of `ids`."""
        batch = await self.client.batches.retrieve(batch_id)
        while batch.status not in ENDED:
            await asyncio.sleep(self.options.batch_poll_seconds)
            batch = await self.client.batches.retrieve(batch_id)
        items: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self.client.files.content(file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        item = json.loads(line)
                        items[str(item.get("custom_id"))] = item
        missing = self._missing(batch)
        return {
            pid: self._outcome(batch_id, pid, items[pid]) if pid in items else missing
            for pid in ids
        }

    def _missing(self, batch: Any) -> tuple[str, bool]:
        """The outcome of an item the batch's files do not hold."""
        if batch.status == "failed":  # the input was refused as a whole
            errors = getattr(batch.errors, "data", None) or []
            why = "; ".join(f"{e.code}: {e.message}" for e in errors[:3]) or "no reason given"
            return f"batch {batch.id} failed: {why}", False
        if batch.status == "cancelled":
            return f"batch {batch.id} was cancelled before answering it", False
        return f"batch {batch.id} {batch.status} without answering it", True

    def _outcome(self, batch_id: str, pid: str, item: dict[str, Any]) -> Outcome:
        from openai.types.chat import ChatCompletion

        response = item.get("response") or {}
        status, body = response.get("status_code"), response.get("body") or {}
        if status == 200:
            return self.answer(pid, ChatCompletion.construct(**body))
        error = item.get("error") or (body.get("error") if isinstance(body, dict) else None)
        error = error if isinstance(error, dict) else {}
        code = error.get("code") or (f"HTTP {status}" if status else "error")
        message = " ".join(str(error.get("message") or "no message").split())
        again = code == "batch_expired" or status in RETRY_STATUSES or (status or 0) >= 500
        return f"batch {batch_id}: {code}: {message}", again

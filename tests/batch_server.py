"""A real Batch API server for tests: OpenAI's Files and Batches endpoints on 127.0.0.1,
answering each JSONL line by forwarding it to a real chat-completions server (the
llama.cpp server of `llama_server`) in a background thread.

    POST /v1/files                   multipart upload (purpose=batch)
    GET  /v1/files/{id}/content      a file's bytes (input, output or error JSONL)
    POST /v1/batches                 create a batch over an uploaded file
    GET  /v1/batches/{id}            the batch object (status, request_counts, file ids)
    POST /v1/batches/{id}/cancel     cancel it

What a test can ask of it: `hold` (cleared: batches stay `in_progress` until it is set),
`expire_once` (custom ids answered `batch_expired` in the error file the first time),
`fail_always` (custom ids answered HTTP 500 every time), `refuse` (a message: batches
fail validation as a whole with it). It records every batch created
(`created`, with its requests) and every status poll (`polled`)."""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class BatchServer(ThreadingHTTPServer):
    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream  # the chat-completions server's .../v1
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []  # {"id", "requests": [JSONL lines]}
        self.polled: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.expire_once: set[str] = set()
        self.fail_always: set[str] = set()
        self.refuse: str | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self.new_id("file")
        self.files[file_id] = content
        return {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed",
        }  # fmt: skip

    def create_batch(self, request: dict[str, Any]) -> dict[str, Any]:
        lines = [json.loads(x) for x in self.files[request["input_file_id"]].splitlines() if x]
        batch = {
            "id": self.new_id("batch"), "object": "batch", "endpoint": request["endpoint"],
            "input_file_id": request["input_file_id"],
            "completion_window": request["completion_window"], "status": "in_progress",
            "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
            "errors": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }  # fmt: skip
        self.batches[batch["id"]] = batch
        self.created.append({"id": batch["id"], "requests": lines})
        if self.refuse is not None:
            error = {"code": "invalid_request", "message": self.refuse, "line": 1, "param": None}
            batch.update(status="failed", errors={"object": "list", "data": [error]})
            return batch
        threading.Thread(target=self._process, args=(batch, lines), daemon=True).start()
        return batch

    def _process(self, batch: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        self.hold.wait()
        output, errors = [], []
        for line in lines:
            if batch["status"] == "cancelling":
                break
            custom_id = line["custom_id"]
            result: dict[str, Any] = {"id": self.new_id("req"), "custom_id": custom_id}
            if custom_id in self.expire_once:
                self.expire_once.discard(custom_id)
                message = "This request could not be executed before the batch expired."
                errors.append(
                    {**result, "response": None,
                     "error": {"code": "batch_expired", "message": message}}
                )  # fmt: skip
                continue
            if custom_id in self.fail_always:
                status, body = 500, {"error": {"message": "upstream broke", "type": "server"}}
            else:
                answer = httpx.post(
                    f"{self.upstream}/chat/completions", json=line["body"], timeout=60
                )
                status, body = answer.status_code, answer.json()
            response = {"status_code": status, "request_id": result["id"], "body": body}
            output.append({**result, "response": response, "error": None})
        counts = batch["request_counts"]
        counts["completed"] = sum(r["response"]["status_code"] == 200 for r in output)
        counts["failed"] = len(lines) - counts["completed"]
        for key, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                content = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = self.add_file(content, f"{key}.jsonl", "batch_output")["id"]
        batch["status"] = "cancelled" if batch["status"] == "cancelling" else "completed"


class _Handler(BaseHTTPRequestHandler):
    server: BatchServer

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["v1", "files"] and parts[3:] == ["content"]:
            content = self.server.files.get(parts[2])
            if content is not None:
                return self._send(200, content, "application/octet-stream")
        if parts[:2] == ["v1", "batches"] and len(parts) == 3:
            self.server.polled.append(parts[2])
            if parts[2] in self.server.batches:
                return self._json(200, self.server.batches[parts[2]])
        return self._json(404, {"error": {"message": f"no {self.path}"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.strip("/").split("/")
        if parts == ["v1", "files"]:
            fields = _multipart(self.headers["Content-Type"], body)
            content, filename = fields["file"]
            return self._json(
                200, self.server.add_file(content, filename, fields["purpose"][0].decode())
            )
        if parts == ["v1", "batches"]:
            return self._json(200, self.server.create_batch(json.loads(body)))
        if parts[:2] == ["v1", "batches"] and parts[3:] == ["cancel"]:
            batch = self.server.batches[parts[2]]
            if batch["status"] == "in_progress":
                batch["status"] = "cancelling"
            return self._json(200, batch)
        return self._json(404, {"error": {"message": f"no {self.path}"}})

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]]:
    """A multipart/form-data body's fields: name -> (content, filename or "")."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True)
        fields[str(name)] = (content, part.get_filename() or "")
    return fields


@contextmanager
def batch_server(upstream: str) -> Iterator[BatchServer]:
    server = BatchServer(upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.hold.set()  # let waiting batches end
        server.shutdown()
        server.server_close()

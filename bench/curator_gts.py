"""Generate-then-Select's generation half with Curator: every teacher answers every prompt.

Run by `bench/bench_curator.py` in Curator's own environment (`make curator-env`: a
separate venv with `bespokelabs-curator`, which persyn's never holds), on the same prompts
and against the same servers as persyn's `calibrate`. Imports nothing of persyn.

Each teacher is one `curator.LLM` with the `openai` backend on the teacher's `base_url`
(Curator's own aiohttp client), `max_concurrent_requests` as persyn's `concurrency`, and
request and token rate limits far above what the run sends, so that only concurrency bounds
it. Curator's cache is off (`CURATOR_DISABLE_CACHE`), so every round really sends its
requests. An `LLM` is one model: the teachers are called one after another, as a Curator
script does. Writes one JSON object: `seconds` (the calls alone: constructing an `LLM`,
which probes the server for rate-limit headers, is left out), `rows`, `failed` and the
seconds of each teacher.

    python bench/curator_gts.py --prompts calib.jsonl --teacher m=http://127.0.0.1:8001/v1 \
        --concurrency 8 --max-tokens 4 --work /tmp/curator --out curator.json
"""

import argparse
import importlib.util
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# before Curator is imported: it reads these at import and call time
os.environ["CURATOR_DISABLE_CACHE"] = "true"
os.environ["TELEMETRY_ENABLED"] = "false"
os.environ.setdefault("OPENAI_API_KEY", "no-key")  # the servers need none; Curator asks
# Curator's openai backend counts tokens with tiktoken's cl100k_base, which tiktoken
# downloads unless cached: litellm (a Curator dependency) ships that file for this machine,
# which has no route to the download
_litellm = importlib.util.find_spec("litellm")
if _litellm is not None and _litellm.origin is not None:
    tokenizers = Path(_litellm.origin).parent / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tokenizers))

from bespokelabs import curator  # noqa: E402

# far above anything a benchmark run sends: the bound is max_concurrent_requests
UNLIMITED_PER_MINUTE = 10_000_000


class Teacher(curator.LLM):
    """A prompt row's chat messages as the request; the answer's text as the row."""

    def prompt(self, input: dict[str, Any]) -> list[dict[str, str]]:
        # JSON text: the prompts' messages as one dataset column of strings
        return json.loads(input["messages_json"])

    def parse(self, input: dict[str, Any], response: str) -> dict[str, Any]:
        return {"prompt_id": input["prompt_id"], "text": (response or "").strip()}


def teacher_llm(model: str, base_url: str, args: argparse.Namespace) -> Teacher:
    return Teacher(
        model_name=model,
        backend="openai",
        generation_params={"max_tokens": args.max_tokens, "temperature": 0.0},
        backend_params={
            "base_url": base_url,
            "max_concurrent_requests": args.concurrency,
            "max_requests_per_minute": UNLIMITED_PER_MINUTE,
            "max_tokens_per_minute": UNLIMITED_PER_MINUTE,
            "max_retries": 0,
            "require_all_responses": False,
            # an answer cut at max_tokens is an answer, as persyn keeps it (Curator's
            # default fails it)
            "invalid_finish_reasons": ["content_filter"],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", required=True, help="JSONL rows: id, messages")
    parser.add_argument(
        "--teacher", action="append", required=True, help="MODEL=BASE_URL, once per teacher"
    )
    parser.add_argument("--concurrency", type=int, required=True, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--work", required=True, help="Curator's working directory")
    parser.add_argument("--out", required=True, help="JSON of the timings to write")
    parser.add_argument(
        "--threads", action="store_true", help="call the LLMs at the same time, a thread each"
    )
    args = parser.parse_args()

    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line]
    data = [{"prompt_id": r["id"], "messages_json": json.dumps(r["messages"])} for r in rows]
    teachers = [spec.split("=", 1) for spec in args.teacher]
    llms = [teacher_llm(model, url, args) for model, url in teachers]

    def answered(model: str, llm: Teacher) -> int:
        response = llm(data, working_dir=str(Path(args.work) / model))
        return len(response.dataset)  # failed requests leave no row

    start = time.perf_counter()
    if args.threads:
        with ThreadPoolExecutor(len(llms)) as threads:
            counts = list(threads.map(answered, [m for m, _ in teachers], llms))
    else:
        counts = [answered(model, llm) for (model, _), llm in zip(teachers, llms, strict=True)]
    result = {
        "seconds": time.perf_counter() - start,
        "rows": len(data) * len(teachers),
        "failed": len(data) * len(teachers) - sum(counts),
    }
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()

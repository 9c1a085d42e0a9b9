"""bench_concurrency: teachers on separate servers at the same time, and streaming against
chunked generation under uneven latency.

The servers are the tests' recording proxy (`tests/http_proxy.py`) answering every chat
completion itself after a fixed delay: they simulate remote API latency, which a llama.cpp
server on this 2-core machine cannot (it answers one request at a time, in seconds under
load). What is measured is persyn's side: how requests are scheduled.

* calibrate: the real `calibrate` stage, 3 `openai` teachers each on its own server, in
  parallel (the backend's default) against one at a time (`parallel: false`);
* streaming: one `openai` teacher over a list where every `--slow-every`-th request takes
  `--slow` seconds and the rest `--latency`: `Teacher.stream` (the pool keeps
  `concurrency` requests in flight over the whole list) against the chunked loop the
  executors ran before (`generate` per chunk of `concurrency` prompts, each chunk waiting
  for its slowest request).

Prints a markdown table and replaces this benchmark's section in bench/RESULTS.md.

    python bench/bench_concurrency.py --prompts 24 --latency 0.5 --concurrency 4
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from persyn.config import TeacherConfig, parse_config
from persyn.demo.tiny_student import build_tiny_student
from persyn.pipeline import Run, run_stage
from persyn.teachers.base import Generation, Prompt, make_teacher

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from http_proxy import Action, Proxy  # the tests' proxy helper
from results_md import replace_section  # bench/ is on sys.path when run as a script

NAME = "bench_concurrency"


def teacher(name: str, base_url: str, concurrency: int, **settings: Any) -> dict[str, Any]:
    return {
        "name": name, "backend": "openai", "model": "m",
        "generation": {"max_new_tokens": 4},
        "options": {"base_url": base_url, "concurrency": concurrency, "max_retries": 0},
        **settings,
    }  # fmt: skip


def calibrate_seconds(
    student: Path, work: Path, urls: list[str], args: argparse.Namespace, parallel: bool
) -> float:
    """Wall time of the calibrate stage alone (prepare runs first, untimed)."""
    settings = {} if parallel else {"parallel": False}
    cfg = parse_config(
        {
            "name": "bench",
            "run_dir": str(work / ("parallel" if parallel else "serial")),
            "student": {"model": str(student), "dtype": "float32"},
            "teachers": [
                teacher(f"api-{i}", url, args.concurrency, **settings) for i, url in enumerate(urls)
            ],
            "prompts": {"builtin": "demo-mix", "num_prompts": args.prompts + 4, "seed": 1},
            "calibration": {"size": args.prompts, "seed": 0},
            "rewards": {"quality": [{"kind": "math"}, {"kind": "ifeval"}]},
            "max_error_rate": 0.0,
            # every run sends its requests: no answer from an earlier run's store
            "store": "none",
        }
    )
    run = Run.open(cfg)
    run_stage(run, "prepare")
    start = time.perf_counter()
    run_stage(run, "calibrate")
    return time.perf_counter() - start


def streaming_seconds(url: str, prompts: list[Prompt], concurrency: int, chunked: bool) -> float:
    backend = make_teacher(
        TeacherConfig.model_validate(teacher("uneven", url, concurrency, batch_size=concurrency))
    )
    backend.load()
    start = time.perf_counter()
    results: list[Generation] = []
    if chunked:  # the executors' loop before streaming: one chunk at a time
        for i in range(0, len(prompts), concurrency):
            results += backend.generate(prompts[i : i + concurrency])
    else:
        results = list(backend.stream(prompts))
    seconds = time.perf_counter() - start
    backend.unload()
    failed = [g for g in results if g.error]
    if failed or len(results) != len(prompts):
        raise RuntimeError(f"{len(failed)} requests failed; first: {failed[0].error}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=24, help="calibration prompts")
    parser.add_argument("--teachers", type=int, default=3, help="servers, one teacher each")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request")
    parser.add_argument("--stream-prompts", type=int, default=32)
    parser.add_argument("--slow", type=float, default=3.0, help="seconds of a slow request")
    parser.add_argument("--slow-every", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, float]] = []
    steady = lambda *_: Action(delay_s=args.latency)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        student = build_tiny_student(work / "student")
        proxies = [Proxy(None, steady).__enter__() for _ in range(args.teachers)]
        try:
            urls = [p.base_url for p in proxies]
            for parallel in (False, True):
                seconds = calibrate_seconds(student, work, urls, args, parallel)
                label = "in parallel" if parallel else "one at a time"
                rows.append(("calibrate", f"{args.teachers} teachers, {label}", seconds))
                print(f"  calibrate {label}: {seconds:.1f}s", file=sys.stderr)
        finally:
            for p in proxies:
                p.__exit__()

    def uneven(index: int, content: str) -> Action:
        slow = content.startswith("slow")
        return Action(delay_s=args.slow if slow else args.latency)

    def prompt(i: int) -> Prompt:
        speed = "slow" if i % args.slow_every == 0 else "fast"
        return Prompt(f"p{i}", [{"role": "user", "content": f"{speed} {i}"}])

    prompts = [prompt(i) for i in range(args.stream_prompts)]
    with Proxy(None, uneven) as proxy:
        for chunked in (True, False):
            seconds = streaming_seconds(proxy.base_url, prompts, args.concurrency, chunked)
            label = f"chunks of {args.concurrency}" if chunked else "streaming"
            rows.append(("generate, uneven latency", label, seconds))
            print(f"  {label}: {seconds:.1f}s", file=sys.stderr)

    command = "python bench/bench_concurrency.py " + " ".join(argv or sys.argv[1:])
    calibrate_speedup = rows[0][2] / rows[1][2]
    stream_speedup = rows[2][2] / rows[3][2]
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()} CPU, 2 cores shared with other jobs. The servers are "
        "`tests/http_proxy.py` answering each request itself after a delay: **simulated "
        "remote API latency**, not model time (a llama.cpp server here answers one request "
        "at a time).  ",
        f"calibrate: {args.teachers} `openai` teachers, one server each, {args.prompts} "
        f"prompts, concurrency {args.concurrency}, {args.latency} s a request. Uneven: "
        f"{args.stream_prompts} prompts, every {args.slow_every}th {args.slow} s, the others "
        f"{args.latency} s, concurrency {args.concurrency}.",
        "",
        "| work | setting | seconds | speed-up |",
        "|---|---|---:|---:|",
        f"| {rows[0][0]} | {rows[0][1]} | {rows[0][2]:.1f} | 1.00x |",
        f"| {rows[1][0]} | {rows[1][1]} | {rows[1][2]:.1f} | **{calibrate_speedup:.2f}x** |",
        f"| {rows[2][0]} | {rows[2][1]} | {rows[2][2]:.1f} | 1.00x |",
        f"| {rows[3][0]} | {rows[3][1]} | {rows[3][2]:.1f} | **{stream_speedup:.2f}x** |",
        "",
        "One at a time is `parallel: false` on every teacher (how calibrate ran before); "
        "chunks are `generate` per chunk of `concurrency` prompts (how the executors ran "
        "before streaming), each chunk waiting for its slowest request.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(NAME, text)


if __name__ == "__main__":
    main()

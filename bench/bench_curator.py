"""bench_curator: Generate-then-Select through persyn against the same through Curator
(`bespokelabs-curator`), on the same servers and prompts.

Generate-then-Select's generation half is every teacher answering every prompt: persyn's
`calibrate` stage (calibration size = every prompt asked) against `bench/curator_gts.py`,
which runs in Curator's own venv (`make curator-env`). The servers are the tests' recording
proxy (`tests/http_proxy.py`), one per teacher, answering every chat completion itself
after a fixed delay: simulated remote API latency, the same for both tools, so what is
measured is each client's scheduling, not this machine's CPU (a llama.cpp server here
answers one request at a time). Both keep `--concurrency` requests in flight per teacher;
Curator's request and token rate limits are set far above what is sent.

Two settings, each over `--rounds` rounds that alternate which tool goes first:
one teacher (the per-request cost of each client alone) and `--teachers` teachers (the
whole Generate-then-Select: persyn runs teachers on their own servers at the same time,
a Curator `LLM` is one model, called one after another). Requests are what the servers
received with a prompt in them (Curator's rate-limit probe at start, which has none, is
counted apart). Prints a markdown table and replaces this benchmark's section in
bench/RESULTS.md.

With `--llama` the proxies forward to one real llama.cpp server instead (SmolLM2-135M, one
thread): two teachers on it, real model time.

    python bench/bench_curator.py --prompts 96 --concurrency 8 --latency 0.4 \
        --curator-python .venv-curator/bin/python
    python bench/bench_curator.py --llama --prompts 16 --concurrency 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from persyn.config import parse_config
from persyn.demo.tiny_student import build_tiny_student
from persyn.pipeline import Run, run_stage

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from bench_concurrency import teacher  # bench/ is on sys.path when run as a script
from http_proxy import Action, Proxy  # the tests' proxy helper
from llama_server import LlamaServer
from results_md import replace_section

NAME = "bench_curator"
CURATOR = "Curator"
CURATOR_THREADS = "Curator, an LLM per thread"
BENCH = Path(__file__).parent


@dataclass
class Timing:
    tool: str
    seconds: float
    requests: int
    probes: int

    @property
    def per_request(self) -> float:
        return self.seconds / self.requests


def prompted(proxies: list[Proxy], start: list[int]) -> tuple[int, int]:
    """Requests with a prompt, and without (probes), since the `start` hit counts."""
    hits = [h for p, s in zip(proxies, start, strict=True) for h in p.hits[s:]]
    with_prompt = sum(1 for h in hits if h.content)
    return with_prompt, len(hits) - with_prompt


def prepared_run(student: Path, run_dir: Path, urls: list[str], args: argparse.Namespace) -> Run:
    """A persyn run with one teacher per server, `prepare` done (untimed)."""
    cfg = parse_config(
        {
            "name": "bench-curator",
            "run_dir": str(run_dir),
            "student": {"model": str(student), "dtype": "float32"},
            "teachers": [teacher(f"m{i}", url, args.concurrency) for i, url in enumerate(urls)],
            # calibrate asks every prompt but those 4 (kept apart by the split)
            "prompts": {"builtin": "demo-mix", "num_prompts": args.prompts + 4, "seed": 1},
            "calibration": {"size": args.prompts, "seed": 0},
            "rewards": {"quality": [{"kind": "math"}, {"kind": "ifeval"}]},
            "max_error_rate": 0.0,
            # a fresh answer store per run: every answer asked of its teacher (none is
            # there to look up) and stored, as in a first run with the default settings
            "store": str(run_dir / "answers.sqlite"),
        }
    )
    run = Run.open(cfg)
    run_stage(run, "prepare")
    return run


def calibration_prompts(run: Run, path: Path) -> Path:
    """The prompts calibrate asks, as curator_gts.py reads them."""
    by_id = run.prompts_by_id()
    rows = [{"id": i, "messages": by_id[i].messages} for i in run.store.split().calibration]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def curator_gts(
    prompts: Path, urls: list[str], work: Path, args: argparse.Namespace, threads: bool
) -> float:
    out = work / "curator.json"
    command = [
        args.curator_python, str(BENCH / "curator_gts.py"), "--prompts", str(prompts),
        *(["--threads"] if threads else []),
        "--concurrency", str(args.concurrency), "--max-tokens", "4",
        "--work", str(work), "--out", str(out),
        *[f"--teacher=m{i}={url}" for i, url in enumerate(urls)],
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"curator_gts.py failed:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result["failed"]:
        raise RuntimeError(f"Curator: {result['failed']} of {result['rows']} rows failed")
    return float(result["seconds"])


def one_round(
    student: Path,
    work: Path,
    proxies: list[Proxy],
    teachers: int,
    args: argparse.Namespace,
    tools: list[str],
) -> list[Timing]:
    """persyn's calibrate and Curator's job on the same prompts and servers, `tools` in
    that order; teacher `i` on server `i % len(proxies)`."""
    urls = [proxies[i % len(proxies)].base_url for i in range(teachers)]
    run = prepared_run(student, work / "persyn", urls, args)
    prompts = calibration_prompts(run, work / "asked-prompts.jsonl")

    def timed(tool: str) -> Timing:
        start_hits = [len(p.hits) for p in proxies]
        start = time.perf_counter()
        if tool == "persyn":
            run_stage(run, "calibrate")
            seconds = time.perf_counter() - start
        else:
            seconds = curator_gts(prompts, urls, work / tool, args, tool == CURATOR_THREADS)
        return Timing(tool, seconds, *prompted(proxies, start_hits))

    return [timed(tool) for tool in tools]


def median_timing(timings: list[Timing]) -> Timing:
    middle = statistics.median_low([t.seconds for t in timings])
    return next(t for t in timings if t.seconds == middle)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=96, help="prompts every teacher answers")
    parser.add_argument("--teachers", type=int, default=3, help="servers, one teacher each")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--latency", type=float, default=0.4, help="seconds per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--llama",
        action="store_true",
        help="the proxies forward to one real llama.cpp server (SmolLM2-135M) instead of "
        "answering after --latency: two teachers on it only",
    )
    parser.add_argument("--curator-python", default=".venv-curator/bin/python")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    if args.llama:
        args.latency, args.teachers = 0.0, 1
    steady = lambda *_: Action(delay_s=args.latency)  # noqa: E731
    # (teachers, servers, tools): on one server persyn takes turns between the teachers, as
    # a Curator script does between its LLMs; on servers of their own persyn runs them at
    # the same time, which Curator does only when the script gives each LLM a thread
    settings = [(2, 1, ["persyn", CURATOR])]
    if args.teachers > 1:
        settings.append((args.teachers, args.teachers, ["persyn", CURATOR, CURATOR_THREADS]))
    results: dict[tuple[int, str], list[Timing]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        student = build_tiny_student(work / "student")
        server = LlamaServer(work, threads=1).start() if args.llama else None
        upstream = server.base_url.removesuffix("/v1") if server else None
        proxies = [Proxy(upstream, steady).__enter__() for _ in range(args.teachers)]
        try:
            # untimed: persyn's first teacher imports its HTTP client, as constructing
            # Curator's LLMs (untimed) imports Curator's
            one_round(student, work / "warm-up", proxies[:1], 2, args, ["persyn"])
            for n, servers, tools in settings:
                for r in range(args.rounds):
                    order = tools[r % len(tools) :] + tools[: r % len(tools)]
                    here = work / f"t{n}-r{r}"
                    for t in one_round(student, here, proxies[:servers], n, args, order):
                        results.setdefault((n, t.tool), []).append(t)
                        print(
                            f"  {n} teachers, round {r}: {t.tool} {t.seconds:.2f}s, "
                            f"{t.requests} requests",
                            file=sys.stderr,
                        )
        finally:
            for p in proxies:
                p.__exit__()
            if server is not None:
                server.kill()

    command = "python bench/bench_curator.py " + " ".join(argv or sys.argv[1:])
    ideal = args.prompts / args.concurrency * args.latency  # one teacher, perfect pool
    if args.llama:
        servers_are = (
            "one llama.cpp server (SmolLM2-135M-Instruct Q4_1, one thread, 4 tokens an "
            "answer) behind `tests/http_proxy.py`, which counts the requests: **real model "
            "time**, which the server spends on one request at a time.  "
        )
        perfect = ""
    else:
        servers_are = (
            "`tests/http_proxy.py` answering each request itself after a delay: **simulated "
            f"remote API latency** ({args.latency} s a request), not model time.  "
        )
        perfect = f" A perfect pool needs {ideal:.1f} s per teacher."
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()} CPU, 2 cores shared with other jobs; "
        f"{curator_version(args.curator_python)} in its own venv. The servers are " + servers_are,
        f"{args.prompts} prompts, every teacher answers every one (Generate-then-Select's "
        f"generation), at most {args.concurrency} requests in flight per teacher for both "
        f"tools; {args.rounds} rounds, which tool goes first rotating; the median round is "
        f"shown.{perfect}",
        "",
        "| teachers | servers | tool | seconds | requests | s / request | persyn / this |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for n, servers, tools in settings:
        persyn = median_timing(results[(n, "persyn")])
        for tool in tools:
            t = median_timing(results[(n, tool)])
            ratio = f"**{persyn.per_request / t.per_request:.2f}x**" if t is not persyn else ""
            lines.append(
                f"| {n} | {servers} | {tool} | {t.seconds:.2f} | {t.requests} | "
                f"{t.per_request:.4f} | {ratio} |"
            )
    rounds = "; ".join(
        f"{tool} ({n} teachers): " + ", ".join(f"{t.seconds:.2f}" for t in timings)
        for (n, tool), timings in results.items()
    )
    probes = sum(t.probes for ts in results.values() for t in ts if t.tool != "persyn")
    lines += [
        "",
        f"Every round, seconds: {rounds}.  ",
        "persyn's time is the `calibrate` stage (its generation logs and a fresh answer "
        "store written, nothing found there); Curator's, "
        "the `LLM` calls (its request and response files and dataset written; constructing "
        "an `LLM`, which imports Curator and probes the server once for rate-limit headers, "
        "left out, as is a warm-up calibrate that imports persyn's HTTP client: "
        f"{probes} probes over all rounds, not counted as requests). An LLM per "
        "thread is the benchmark script's doing (`curator_gts.py --threads`), not a "
        "Curator setting. A ratio under 1 is persyn faster per request.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(f"{NAME}, llama.cpp server" if args.llama else NAME, text)


def curator_version(python: str) -> str:
    found = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('bespokelabs-curator'))"],
        capture_output=True,
        text=True,
    )
    return f"bespokelabs-curator {found.stdout.strip() or '(version unknown)'}"


if __name__ == "__main__":
    main()

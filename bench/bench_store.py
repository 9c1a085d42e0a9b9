"""bench_store: the answer store's lookup cost, its size, and what a second run saves.

1. Lookup at scale: a fresh store holding `--answers` answers (5 teachers, answers of
   `--chars` characters, written in batches of 500 as `ask_teacher` writes them); then
   `lookup` of `--lookup` prompts of one teacher at once (one query per 500 prompts), on a
   freshly opened connection (cold) and again (warm), all found; and of prompts none of
   which is stored. Reported: ms per row, write rate, the file's size.
2. A second run (skipped with `--demo-prompts 0`): the demo config, smaller, run in a
   fresh run directory with a fresh store, then again in another fresh run directory with
   `rewards.alpha` changed and the same store. Reported per run: the `calibrate` and
   `generate` stages' generated and from-store answers and their wall time.

Prints markdown and replaces this benchmark's section in bench/RESULTS.md.

    python bench/bench_store.py --answers 100000 --demo-prompts 40 --demo-calibration 20
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from bench_import import timed_stages  # bench/ is on sys.path when run as a script
from results_md import replace_section

from persyn.answer_store import AnswerStore
from persyn.cli import demo_config_path
from persyn.config import parse_config

NAME = "bench_store: the answer store shared by runs (issue 28)"
TEACHERS = 5
BATCH = 500
HEADER = (
    "| run | calibrate generated | calibrate from store | calibrate s | generate generated "
    "| generate from store | generate s | total s |"
)


def fill(path: Path, answers: int, chars: int) -> float:
    """Write `answers` answers; returns seconds."""
    store = AnswerStore(path)
    per_teacher = answers // TEACHERS
    text = ("lorem ipsum " * (chars // 12 + 1))[:chars]
    start = time.perf_counter()
    for t in range(TEACHERS):
        for first in range(0, per_teacher, BATCH):
            rows = [
                {
                    "prompt_id": f"p{i}",
                    "fp": f"teacher-{t}",
                    "prompt_fp": f"prompt-{i:08d}",
                    "text": text,
                    "reasoning": None,
                    "prompt_tokens": 40,
                    "completion_tokens": chars // 4,
                    "finish_reason": "stop",
                    "truncated": False,
                    "error": None,
                }
                for i in range(first, min(first + BATCH, per_teacher))
            ]
            store.put(f"teacher-{t}", "some/model", rows, lambda pid: [_user(pid)])
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def _user(pid: str) -> dict[str, str]:
    return {"role": "user", "content": f"question {pid}: " + "x" * 200}


def timed_lookup(path: Path, fp: str, hashes: list[str]) -> tuple[float, int]:
    """(seconds, rows found) of one `lookup` on an open store."""
    store = AnswerStore(path)
    start = time.perf_counter()
    found = store.lookup(fp, hashes)
    seconds = time.perf_counter() - start
    store.close()
    return seconds, len(found)


def lookup_bench(work: Path, answers: int, chars: int, lookup: int) -> dict[str, Any]:
    path = work / "answers.sqlite"
    write_s = fill(path, answers, chars)
    hashes = [f"prompt-{i:08d}" for i in range(lookup)]
    missing = [f"absent-{i:08d}" for i in range(lookup)]
    cold, found = timed_lookup(path, "teacher-2", hashes)
    store = AnswerStore(path)
    start = time.perf_counter()
    warm_found = len(store.lookup("teacher-2", hashes))
    warm = time.perf_counter() - start
    start = time.perf_counter()
    none_found = len(store.lookup("teacher-2", missing))
    miss = time.perf_counter() - start
    size = store.size_bytes()
    store.close()
    assert found == warm_found == lookup and none_found == 0
    return {
        "write_s": write_s,
        "cold_ms": cold * 1000 / lookup,
        "warm_ms": warm * 1000 / lookup,
        "miss_ms": miss * 1000 / lookup,
        "size_mb": size / 1e6,
    }


def demo_runs(work: Path, prompts: int, calibration: int) -> list[dict[str, Any]]:
    data = yaml.safe_load(demo_config_path().read_text())
    data["prompts"]["num_prompts"] = prompts
    data["calibration"]["size"] = calibration
    data["store"] = str(work / "demo-answers.sqlite")
    out = []
    for label, alpha in (("first", None), ("second (alpha 0.7)", 0.7)):
        run_data = copy.deepcopy(data)
        run_data["run_dir"] = str(work / label.split()[0])
        if alpha is not None:
            run_data["rewards"]["alpha"] = alpha
        run, seconds = timed_stages(parse_config(run_data))
        markers = {s: run.store.marker(s) or {} for s in ("calibrate", "generate")}
        counts = {
            s: {
                k: sum(t.get(k, 0) for t in m["teachers"].values())
                for k in ("generated", "from_store")
            }
            for s, m in markers.items()
        }
        out.append({"label": label, "seconds": seconds, "counts": counts})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--answers", type=int, default=100_000, help="answers in the store")
    ap.add_argument("--chars", type=int, default=1200, help="characters per answer")
    ap.add_argument("--lookup", type=int, default=10_000, help="prompts looked up at once")
    ap.add_argument("--demo-prompts", type=int, default=40, help="0: no demo runs")
    ap.add_argument("--demo-calibration", type=int, default=20)
    ap.add_argument("--work", default="runs/bench-store", help="scratch folder (replaced)")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()

    load = os.getloadavg()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lk = lookup_bench(work, args.answers, args.chars, args.lookup)
    verdict = "met" if lk["cold_ms"] < 0.1 and lk["warm_ms"] < 0.1 else "NOT met"
    command = (
        f"python bench/bench_store.py --answers {args.answers} --chars {args.chars} "
        f"--lookup {args.lookup} --demo-prompts {args.demo_prompts} "
        f"--demo-calibration {args.demo_calibration}"
    )
    body = f"""Command: `{command}`  
Machine: {platform.machine()} CPU, {os.cpu_count()} cores, shared with other jobs
(load average {load[0]:.1f} at the start)  
Date: {datetime.date.today().isoformat()}; SQLite in WAL mode, local disk.

**Lookup at {args.answers:,} answers** ({TEACHERS} teachers, {args.chars}-character answers,
written in batches of {BATCH}: {args.answers / lk["write_s"]:,.0f} answers/s):
{args.lookup:,} prompts of one teacher looked up at once (one query per 500 prompts).

| lookup | ms per row |
|---|---:|
| cold (new connection), all found | {lk["cold_ms"]:.4f} |
| warm, all found | {lk["warm_ms"]:.4f} |
| none stored | {lk["miss_ms"]:.4f} |

Target < 0.1 ms per row: {verdict}. Size on disk: **{lk["size_mb"]:.1f} MB**
({lk["size_mb"] * 1e6 / args.answers:,.0f} bytes per answer, text included)."""
    if args.demo_prompts:
        runs = demo_runs(work, args.demo_prompts, args.demo_calibration)
        rows = [
            f"| {r['label']} | {r['counts']['calibrate']['generated']} | "
            f"{r['counts']['calibrate']['from_store']} | {r['seconds']['calibrate']:.1f} | "
            f"{r['counts']['generate']['generated']} | {r['counts']['generate']['from_store']} | "
            f"{r['seconds']['generate']:.1f} | {sum(r['seconds'].values()):.1f} |"
            for r in runs
        ]
        body += f"""

**A second run** of the demo config (`prompts.num_prompts={args.demo_prompts}`,
`calibration.size={args.demo_calibration}`; two SmolLM2-135M teachers on transformers and
three programmatic solvers) in a fresh run directory with `rewards.alpha` 0.7 instead of
0.4, sharing the first run's store:

{chr(10).join([HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|", *rows])}

The second run asks no teacher for a calibration answer; it still scores them (scores
live in the run directory), and generates only the routed prompts whose teacher under
the new alpha no run asked before."""
    print(body)
    if not args.no_write:
        replace_section(NAME, body)


if __name__ == "__main__":
    main()

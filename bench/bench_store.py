"""bench_store: the answer store's lookup cost, its size, and what a second student and a
sixth teacher cost.

1. Lookup at scale (skipped with `--answers 0`: the section keeps the figures it has): a
   fresh store holding `--answers` answers (5 teachers, answers of `--chars` characters,
   written in batches of 500 as `ask_teacher` writes them); then `lookup` of `--lookup`
   prompts of one teacher at once (one query per 500 prompts), on a freshly opened
   connection (cold) and again (warm), all found; and of prompts none of which is stored.
   Reported: ms per row, write rate, the file's size.
2. Students and teachers (skipped with `--demo-prompts 0`): the demo config, smaller,
   with two students (the demo's SmolLM2 and the tiny random student) in a fresh run
   directory with a fresh store; then a sixth, programmatic teacher added to that
   finished run; then the six teachers from scratch in another fresh run directory with
   another fresh store. Reported per run and student: calibration and routed generations,
   routes that differ from the first student's (and from the five-teacher run's), wall
   time per stage, the routers' agreement.

Prints markdown and replaces this benchmark's section in bench/RESULTS.md.

    python bench/bench_store.py --answers 100000 --demo-prompts 0
    python bench/bench_store.py --answers 0 --demo-prompts 40 --demo-calibration 20
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from bench_import import open_cold, stage_seconds  # bench/ is on sys.path as a script
from results_md import RESULTS, replace_section

from persyn.answer_store import AnswerStore
from persyn.cli import demo_config_path
from persyn.config import parse_config
from persyn.demo.solvers import REFUSAL, _steps
from persyn.demo.tiny_student import build_tiny_student
from persyn.run import Run
from persyn.students import run_students
from persyn.teachers.base import Prompt

NAME = "bench_store: the answer store shared by runs (issue 28)"
TEACHERS = 5
BATCH = 500
LOOKUP_HEAD = "**Lookup at"
DEMO_HEAD = "**Two students, then a sixth teacher**"
# Imported by name (bench/ is on sys.path), like a user's own programmatic teacher.
SIXTH = {"name": "solver-worked", "backend": "scripted", "model": "bench_store:solver_worked"}
# Stage columns of the tables: the shared stages, the student's scoring, its router, ...
COLUMNS = {
    "prepare+calibrate": ("prepare", "calibrate"),
    "tune+score": ("tune", "score"),
    "train-router+route": ("train-router", "route"),
    "generate": ("generate",),
    "export": ("export",),
}


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


def solver_worked(prompt: Prompt) -> str:
    """The sixth teacher: always right, one equation per step and no story (between
    `solver-concise` and `solver-verbose`); refuses what is not arithmetic, as they do."""
    steps = _steps(prompt)
    if steps is None:
        return REFUSAL
    lines = [f"{before} {op} {n} = {after}" for before, op, n, after in steps]
    return "\n".join([*lines, f"The answer is {steps[-1][3]}."])


def two_students(work: Path, prompts: int, calibration: int) -> dict[str, Any]:
    """The demo config, smaller, with its SmolLM2 student and the tiny random one."""
    data = yaml.safe_load(demo_config_path().read_text())
    data["prompts"]["num_prompts"] = prompts
    data["calibration"]["size"] = calibration
    tiny = build_tiny_student(work / "tiny-student")
    data["students"] = [
        {"name": "smol", **data.pop("student")},
        {"name": "tiny", "model": str(tiny), "dtype": "float32", "max_length": 256},
    ]
    return data


def timed_students(data: dict[str, Any], run_dir: Path, store: Path) -> dict[str, Any]:
    """Every stage of every student of `data` in `run_dir` with the answer store `store`:
    per student its stages' seconds, the calibration answers generated during them (per
    teacher), its routed generations and its routes; and the routers' agreement."""
    cfg = parse_config({**data, "run_dir": str(run_dir), "store": str(store)})
    run = open_cold(cfg)
    students: dict[str, dict[str, Any]] = {}

    def finish(one: Run) -> None:
        before = run.store.marker("calibrate")
        seconds = stage_seconds(one)
        after = run.store.marker("calibrate") or {}
        generate = (one.store.marker("generate") or {})["teachers"].values()
        students[one.store.root.name] = {
            "seconds": seconds,
            # the shared calibration ran for this student only if its marker is new
            "calibrated": {}
            if after == before
            else {t: s["generated"] for t, s in after["teachers"].items()},
            "generated": sum(s["generated"] for s in generate),
            "from_store": sum(s["from_store"] for s in generate),
            "routes": {r["prompt_id"]: r["teacher"] for r in one.store.routes()},
        }

    summary = run_students(run, None, False, finish)
    return {"students": students, "agreement": summary["comparison"]["agreement"]}


def differ(a: dict[str, str], b: dict[str, str]) -> int:
    """Prompts routed by both whose teachers differ."""
    return sum(a[p] != b[p] for p in a.keys() & b.keys())


def demo_part(work: Path, prompts: int, calibration: int) -> str:
    load = os.getloadavg()[0]
    data = two_students(work, prompts, calibration)
    five = timed_students(data, work / "run", work / "answers.sqlite")
    six_data = {**data, "teachers": [*data["teachers"], SIXTH]}
    added = timed_students(six_data, work / "run", work / "answers.sqlite")
    scratch = timed_students(six_data, work / "scratch", work / "scratch-answers.sqlite")
    runs = {"five teachers": five, "sixth added": added, "six from scratch": scratch}
    first = next(iter(five["students"]))
    per_student = []
    for label, r in runs.items():
        for name, s in r["students"].items():
            stages = [sum(s["seconds"][k] for k in ks) for ks in COLUMNS.values()]
            per_student.append(
                f"| {label} | {name} | {sum(s['calibrated'].values())} | {s['generated']} | "
                f"{s['from_store']} | {differ(s['routes'], r['students'][first]['routes'])} | "
                + " | ".join(f"{x:.1f}" for x in stages)
                + f" | {sum(stages):.1f} |"
            )
    sixth = SIXTH["name"]
    per_run = []
    for label, r in runs.items():
        students = r["students"].values()
        new = sum(s["calibrated"].get(sixth, 0) for s in students)
        other = sum(sum(s["calibrated"].values()) for s in students) - new
        routed = sum(s["generated"] for s in students)
        changed = " / ".join(
            str(differ(s["routes"], five["students"][n]["routes"]))
            for n, s in r["students"].items()
        )
        seconds = sum(sum(s["seconds"].values()) for s in students)
        per_run.append(
            f"| {label} | {new} | {other} | {routed} | {changed} | {new + other + routed} | "
            f"{seconds:.1f} |"
        )
    same = {
        n: added["students"][n]["routes"] == s["routes"] for n, s in scratch["students"].items()
    }
    names = list(five["students"])
    agreement = ", ".join(
        f"{label} {r['agreement'][names[0]][names[1]]:.2f}" for label, r in runs.items()
    )
    command = (
        f"python bench/bench_store.py --answers 0 --demo-prompts {prompts} "
        f"--demo-calibration {calibration}"
    )
    by_student = (
        "| run | student | calibration generations | routed generations | routed from store "
        f"| routes ≠ {names[0]}'s | {' | '.join(f'{c} s' for c in COLUMNS)} | total s |\n"
        f"|---|---|---:|---:|---:|---:|{'---:|' * (len(COLUMNS) + 1)}"
    )
    by_run = (
        f"| run | {sixth} calibration generations | other teachers' calibration generations "
        "| routed generations | routes changed | generations | wall s |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    return f"""{DEMO_HEAD}  
{measured(command, load)}

The demo config (`prompts.num_prompts={prompts}`, `calibration.size={calibration}` instead
of 400 and 200: two SmolLM2-135M teachers on transformers, three programmatic solvers)
with two students (`students:`): `{names[0]}`, the demo's SmolLM2-135M, and `{names[1]}`,
the tiny random 2-layer Llama of `persyn.demo.tiny_student`. Three runs, one after the
other in one process:

1. **five teachers**: a fresh run directory and a fresh store;
2. **sixth added**: the same run directory and store, the pool plus `{sixth}` (a
   programmatic teacher of this script: always right, one equation per step);
3. **six from scratch**: the six teachers in a fresh run directory with a fresh store.

Per run and student (the shared `prepare` and `calibrate` run with the first student;
"routes ≠ {names[0]}'s": routed prompts its router sends to another teacher than
`{names[0]}`'s):

{by_student}
{chr(10).join(per_student)}

Per run (routes changed: routed prompts whose teacher differs from the five-teacher
run's, {" / ".join(names)}):

{by_run}
{chr(10).join(per_run)}

- Routers' agreement ({names[0]} vs {names[1]}, share of routed prompts sent to the same
  teacher, the top summary's comparison): {agreement}.
- Routes of the sixth-added run equal to those from scratch:
  {", ".join(f"{n} {'yes' if v else 'NO'}" for n, v in same.items())}."""


def measured(command: str, load: float) -> str:
    """Which command ran where and when (`load`: the load average at its start): each part
    of the section says so, as they may be measured apart."""
    return f"""Command: `{command}`  
Machine: {platform.machine()} CPU, {os.cpu_count()} cores, shared with other jobs
(load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)  
Date: {datetime.date.today().isoformat()}; SQLite in WAL mode, local disk."""


def lookup_part(work: Path, answers: int, chars: int, lookup: int) -> str:
    load = os.getloadavg()[0]
    lk = lookup_bench(work, answers, chars, lookup)
    verdict = "met" if lk["cold_ms"] < 0.1 and lk["warm_ms"] < 0.1 else "NOT met"
    command = (
        f"python bench/bench_store.py --answers {answers} --chars {chars} "
        f"--lookup {lookup} --demo-prompts 0"
    )
    return f"""{LOOKUP_HEAD} {answers:,} answers** ({TEACHERS} teachers, {chars}-character answers,
written in batches of {BATCH}: {answers / lk["write_s"]:,.0f} answers/s):
{lookup:,} prompts of one teacher looked up at once (one query per 500 prompts).  
{measured(command, load)}

| lookup | ms per row |
|---|---:|
| cold (new connection), all found | {lk["cold_ms"]:.4f} |
| warm, all found | {lk["warm_ms"]:.4f} |
| none stored | {lk["miss_ms"]:.4f} |

Target < 0.1 ms per row: {verdict}. Size on disk: **{lk["size_mb"]:.1f} MB**
({lk["size_mb"] * 1e6 / answers:,.0f} bytes per answer, text included)."""


def kept_part(head: str, until: str) -> str:
    """The part of this section starting with `head` as RESULTS.md has it (up to `until` or
    the next section), for a part this invocation does not measure again."""
    section = re.search(
        rf"^## {re.escape(NAME)}\n(.*?)(?=^## |\Z)", RESULTS.read_text(), re.S | re.M
    )
    text = section.group(1) if section else ""
    found = re.search(rf"^{re.escape(head)}.*?(?=^{re.escape(until)}|\Z)", text, re.S | re.M)
    return found.group(0).strip() if found else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--answers", type=int, default=100_000, help="0: no lookup measurement")
    ap.add_argument("--chars", type=int, default=1200, help="characters per answer")
    ap.add_argument("--lookup", type=int, default=10_000, help="prompts looked up at once")
    ap.add_argument("--demo-prompts", type=int, default=40, help="0: no demo runs")
    ap.add_argument("--demo-calibration", type=int, default=20)
    ap.add_argument("--work", default="runs/bench-store", help="scratch folder (replaced)")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    parts = [
        lookup_part(work, args.answers, args.chars, args.lookup)
        if args.answers
        else kept_part(LOOKUP_HEAD, DEMO_HEAD),
        demo_part(work, args.demo_prompts, args.demo_calibration)
        if args.demo_prompts
        else kept_part(DEMO_HEAD, LOOKUP_HEAD),
    ]
    body = "\n\n".join(p for p in parts if p)
    print(body)
    if not args.no_write:
        replace_section(NAME, body)


if __name__ == "__main__":
    main()

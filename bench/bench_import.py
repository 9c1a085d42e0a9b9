"""bench_import: calibrating from an imported dataset against calibrating from scratch.

The demo config (smaller: `--prompts`, `--calibration`), run twice side by side in one
process on the same machine:

* scratch - the whole pipeline as shipped: every teacher answers every calibration prompt
  (two SmolLM2 teachers and three programmatic solvers), then score, train-router, route,
  generate, export;
* imported - a fresh run directory whose `calibration.source` is a JSONL file holding the
  scratch run's calibration answers (one column per teacher, exported after the scratch
  run and not timed): the same pipeline with no calibration generation.

Reported per run: wall time per stage, generations (model calls; imported answers are not
generations) and imported answers; and whether the two runs gave the router the same
inputs (rewards table) and the same routes. Prints a markdown table and replaces this
benchmark's section in bench/RESULTS.md.

    python bench/bench_import.py --prompts 120 --calibration 60
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
from results_md import replace_section  # bench/ is on sys.path when run as a script

from persyn.artifacts import RunArtifacts
from persyn.cli import demo_config_path
from persyn.config import RunConfig, parse_config
from persyn.models import release_cached_model
from persyn.pipeline import STAGES, Run, run_stage, validate
from persyn.store import read_jsonl, write_jsonl

NAME = "bench_import: calibrating from an imported dataset (issue 17)"
DEMO = yaml.safe_load(demo_config_path().read_text())


def demo_config(run_dir: Path, prompts: int, calibration: int) -> dict[str, Any]:
    data = copy.deepcopy(DEMO)  # read once: both runs get the same config
    data["run_dir"] = str(run_dir)
    data["prompts"]["num_prompts"] = prompts
    data["calibration"]["size"] = calibration
    return data


def open_cold(cfg: RunConfig) -> Run:
    """The run of `cfg`, its config written, with no model loaded yet."""
    release_cached_model()  # each run loads its models itself
    validate(cfg)
    run = Run.open(cfg)
    run.store.write_config(cfg)
    return run


def stage_seconds(run: Run) -> dict[str, float]:
    """Every stage of `run` in order, each timed: its seconds."""
    seconds = {}
    for stage in STAGES:
        start = time.perf_counter()
        run_stage(run, stage)
        seconds[stage] = time.perf_counter() - start
    return seconds


def timed_stages(cfg: RunConfig) -> tuple[Run, dict[str, float]]:
    """Every stage in order from a cold start: the run and each stage's seconds."""
    run = open_cold(cfg)
    return run, stage_seconds(run)


def timed_run(cfg: RunConfig) -> dict[str, Any]:
    """Every stage in order, each timed, from a cold start; the summary's counts."""
    run, seconds = timed_stages(cfg)
    summary = run.store.summary()
    return {
        "seconds": seconds,
        "generations": summary["generations"],
        "imported": summary.get("imported_responses", 0),
        "summary": summary,
    }


def rows_without_fp(path: Path) -> list[dict[str, Any]]:
    """The rows without the fingerprints of the config that made them (the import is part
    of the imported run's config)."""
    return [{k: v for k, v in r.items() if not k.endswith("_fp")} for r in read_jsonl(path)]


def export_calibration(run_dir: Path, teachers: list[str], path: Path) -> int:
    """The scratch run's calibration answers as a parallel-response file: one row per
    prompt, a column per teacher (the magpie-zoo shape, with an id column)."""
    store = RunArtifacts(run_dir)
    prompts = {p.id: p for p in store.prompts()}
    answers = {
        t: {
            r["prompt_id"]: r["text"]
            for r in read_jsonl(store.generation_path(t))
            if r["error"] is None
        }
        for t in teachers
    }
    rows = [
        {"id": pid, "prompt": prompts[pid].messages[-1]["content"]}
        | {t: answers[t].get(pid) for t in teachers}
        for pid in store.split().calibration
    ]
    return write_jsonl(path, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=120, help="demo prompts (demo: 400)")
    ap.add_argument("--calibration", type=int, default=60, help="calibration size (demo: 200)")
    ap.add_argument("--work", default="runs/bench-import", help="scratch folder (replaced)")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()

    load = os.getloadavg()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scratch_data = demo_config(work / "scratch", args.prompts, args.calibration)
    scratch = timed_run(parse_config(scratch_data))

    teachers = [t["name"] for t in scratch_data["teachers"]]
    answers_file = work / "calibration-answers.jsonl"
    export_calibration(work / "scratch", teachers, answers_file)
    imported_data = demo_config(work / "imported", args.prompts, args.calibration)
    imported_data["calibration"]["source"] = {
        "path": str(answers_file),
        "id": "id",
        "responses": {t: t for t in teachers},
    }
    imported = timed_run(parse_config(imported_data))

    scratch_run, imported_run = RunArtifacts(work / "scratch"), RunArtifacts(work / "imported")
    same = {
        name: rows_without_fp(path(scratch_run)) == rows_without_fp(path(imported_run))
        for name, path in (
            ("rewards", RunArtifacts.rewards_path),
            ("routes", RunArtifacts.routes_path),
        )
    }
    calib = ("prepare", "calibrate")
    rows = []
    for label, r in (("scratch", scratch), ("imported", imported)):
        s = r["seconds"]
        rows.append(
            f"| {label} | {r['generations']} | {r['imported']} | "
            f"{sum(s[k] for k in calib):.1f} | {s['score']:.1f} | "
            f"{s['train-router'] + s['route']:.1f} | {s['generate']:.1f} | "
            f"{sum(s.values()):.1f} |"
        )
    saved_gen = scratch["generations"] - imported["generations"]
    saved_s = sum(scratch["seconds"].values()) - sum(imported["seconds"].values())
    calib_s = [sum(r["seconds"][k] for k in calib) for r in (scratch, imported)]
    table = "\n".join(
        [
            "| run | generations | imported answers | prepare+calibrate s | score s | "
            "train-router+route s | generate s | total s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    command = (
        f"python bench/bench_import.py --prompts {args.prompts} --calibration {args.calibration}"
    )
    body = f"""Command: `{command}`  
Machine: {platform.machine()} CPU, {os.cpu_count()} cores, shared with other jobs
(load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; one run each)  
Date: {datetime.date.today().isoformat()}

The demo config (`persyn/configs/demo.yaml`: two SmolLM2-135M teachers on transformers,
three programmatic solvers, SmolLM2 student, Bradley-Terry router) with
`prompts.num_prompts={args.prompts}` and `calibration.size={args.calibration}` instead of
400 and 200, so that both runs fit in well under an hour on this shared machine.
"imported" calibrates from a JSONL file of the scratch run's own calibration answers (one
column per teacher, `calibration.source` with `responses`), in a fresh run directory.

{table}

- Saved: **{saved_gen} generations** ({args.calibration} calibration prompts x
  {len(teachers)} teachers = {args.calibration * len(teachers)}) and
  **{calib_s[0] - calib_s[1]:.1f} s** of calibration ({calib_s[0]:.1f} s -> {calib_s[1]:.1f} s),
  {saved_s:.1f} s of the whole pipeline. The generations left are the routed prompts'.
- Same router inputs (`rewards.jsonl` identical): {"yes" if same["rewards"] else "NO"};
  same routes (`routes.jsonl` identical but for the router fingerprint):
  {"yes" if same["routes"] else "NO"}.
- Not saved: scoring runs on imported answers as on generated ones (the student's
  learnability; the demo's quality signals are verifiers), and the routed prompts are
  generated as before."""
    print(body)
    if not args.no_write:
        replace_section(NAME, body)


if __name__ == "__main__":
    main()

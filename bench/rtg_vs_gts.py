"""rtg_vs_gts: persyn's Route-then-Generate against Generate-then-Select, on real servers.

Same prompts (the demo's `demo-mix`), same teachers, same machine, one run. The two LLM
teachers of the demo (SmolLM2-135M-Instruct with two system prompts) are each served by
their own llama.cpp server (llama-cpp-python, packaged GGUF) and reached through persyn's
`openai` backend; the three programmatic solvers of the demo run in process. For every
prompt count three jobs start from empty run directories:

* **persyn** (Route-then-Generate): `run_pipeline` with `calibration.size` = `--calibration`:
  every teacher answers the calibration prompts, the router learns from their rewards,
  every other prompt is answered only by the teacher the router picks.
* **persyn GtS** (Generate-then-Select): the same pipeline with `calibration.size` = all
  prompts: every teacher answers every prompt and the export keeps the oracle's answer
  (the router is `best-fixed`, which trains in no time and routes nothing).
* **distilabel GtS**: `bench/distilabel_gts.py` in the benchmark's own venv (`make
  bench-env`): distilabel's `TextGeneration` tasks (`OpenAILLM`) against the same servers
  plus a step per solver; then selection by the same reward: the responses are written as
  the generation log of a persyn run directory, and persyn's `score` and `export` stages
  keep the best answer per prompt.

Measured per job: wall time (and its generate / score / router parts), generations (all
teachers, and those served by the LLM servers), LLM tokens generated (the servers'
`usage`), and the mean combined reward of the final dataset. Every dataset is scored with
one reward table, the persyn GtS run's: rewards are normalised within a prompt across all
teachers, so a routed prompt's reward is the one its chosen teacher's answer gets there
(responses are greedy, so the same teacher writes the same answer in every job; the
number of answers that differ is reported). The order of the three jobs rotates from one
prompt count to the next, so load from other jobs on a shared machine falls on all alike.
Prints the tables and replaces this benchmark's section of bench/RESULTS.md.

    make bench-env && python bench/rtg_vs_gts.py --sizes 30 60 120 --calibration 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from persyn.artifacts import RunArtifacts
from persyn.cli import demo_config_path
from persyn.config import RunConfig, parse_config
from persyn.models import release_cached_model
from persyn.pipeline import STAGES, Run, run_pipeline
from persyn.progress import set_quiet
from persyn.stages.common import teacher_fingerprint
from persyn.stages.export import export
from persyn.stages.prepare import prepare
from persyn.stages.score import score
from persyn.store import atomic_write_text, read_jsonl, write_jsonl

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from llama_server import LlamaServer  # the tests' server helper
from results_md import replace_section  # bench/ is on sys.path when run as a script

HEADING = "Route-then-Generate vs Generate-then-Select"
DISTILABEL_JOB = Path(__file__).with_name("distilabel_gts.py")
JOBS = ("persyn", "persyn GtS", "distilabel GtS")
# The model name sent to the servers; llama-cpp-python serves its one model whatever it is.
SERVED_MODEL = "SmolLM2-135M-Instruct"
# Which stages make up each part of a persyn job's wall time.
PARTS = {
    "generate": ("calibrate", "generate"),
    "score": ("score",),
    "router": ("train-router", "route"),
    "other": ("prepare", "export"),
}


@dataclass
class Job:
    """What one job cost and the dataset it produced."""

    name: str
    prompts: int
    seconds: float
    parts: dict[str, float]
    generations: int
    llm_generations: int
    llm_tokens: int
    run_dir: Path

    def dataset(self) -> list[dict[str, Any]]:
        return RunArtifacts(self.run_dir).dataset()


def bench_config(
    base: dict[str, Any],
    servers: list[LlamaServer],
    prompts: int,
    calibration: int,
    max_new_tokens: int,
) -> RunConfig:
    """The demo config with its LLM teachers on the llama.cpp servers (`backend: openai`),
    `prompts` demo-mix prompts and `calibration` of them answered by every teacher."""
    data = json.loads(json.dumps(base))  # a deep copy of plain YAML data
    llm_teachers = [t for t in data["teachers"] if t["backend"] == "hf"]
    if len(llm_teachers) != len(servers):
        raise SystemExit(f"{len(llm_teachers)} LLM teachers in the demo, {len(servers)} servers")
    for teacher, server in zip(llm_teachers, servers, strict=True):
        teacher.pop("gguf_file")
        teacher.update(
            backend="openai",
            model=SERVED_MODEL,
            options={"base_url": server.base_url},
            generation={"max_new_tokens": max_new_tokens},
        )
    data["prompts"]["num_prompts"] = prompts
    data["calibration"]["size"] = calibration
    if calibration >= prompts:
        # Generate-then-Select: nothing is left to route, so no router worth training.
        data["router"] = {"kind": "best-fixed", "val_fraction": 0.0}
    return parse_config(data, "bench config")


def generation_counts(cfg: RunConfig, run_dir: Path) -> tuple[int, int, int]:
    """(generations, of them by the LLM servers, LLM tokens) in a run's generation logs:
    every run starts empty, so every row was generated by this job."""
    generations = llm_generations = llm_tokens = 0
    store = RunArtifacts(run_dir)
    for t in cfg.teachers:
        rows = list(store.generation_log(t.name).rows.values())
        generations += len(rows)
        if t.backend == "openai":
            llm_generations += len(rows)
            llm_tokens += sum(r["completion_tokens"] for r in rows)
    return generations, llm_generations, llm_tokens


def stage_parts(run: Run, start: float) -> dict[str, float]:
    """Seconds per part of a finished pipeline, from the stages' finish times."""
    seconds, previous = {}, start
    for stage in STAGES:
        finished = run.store.marker(stage)["finished_at"]  # type: ignore[index]
        seconds[stage], previous = finished - previous, finished
    return {part: sum(seconds[s] for s in stages) for part, stages in PARTS.items()}


def fresh_dir(path: Path) -> None:
    """An empty run directory: nothing cached from an earlier run is reused."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def run_persyn(name: str, cfg: RunConfig, run_dir: Path) -> Job:
    """The whole persyn pipeline from an empty run directory, student loaded afresh."""
    fresh_dir(run_dir)
    release_cached_model()
    start = time.time()
    run_pipeline(cfg, str(run_dir))
    seconds = time.time() - start
    run = Run.open(cfg, str(run_dir))
    parts = stage_parts(run, start)
    return Job(name, len(run.prompts), seconds, parts, *generation_counts(cfg, run_dir), run_dir)


def run_distilabel(cfg: RunConfig, run_dir: Path, bench_python: str) -> Job:
    """distilabel generates every teacher's answer to every prompt; persyn's `score` and
    `export` keep the best one by the same reward."""
    fresh_dir(run_dir)
    release_cached_model()
    start = time.time()
    run = Run.open(cfg, str(run_dir))
    prepare(run)
    run.store.write_config(cfg)
    out = run_dir / "distilabel_generations.jsonl"
    prompts_file = run_dir / "distilabel_prompts.jsonl"
    write_jsonl(prompts_file, (p.to_row() for p in run.prompts))
    config_file = run_dir / "distilabel_config.yaml"
    atomic_write_text(config_file, yaml.safe_dump(cfg.model_dump(mode="json")))
    command = [
        bench_python, str(DISTILABEL_JOB), "--config", str(config_file),
        "--prompts", str(prompts_file), "--out", str(out),
        "--cache-dir", str(run_dir / "distilabel-cache"),
    ]  # fmt: skip
    generate_start = time.time()
    with (run_dir / "distilabel.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"distilabel job failed ({done.returncode}); see {run_dir}/distilabel.log")
    generate_seconds = time.time() - generate_start
    # distilabel's answers become the run's generation log: `score` then reads them as if
    # persyn's own calibrate stage had written them.
    fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    rows = read_jsonl(out)
    for t in cfg.teachers:
        run.store.generation_log(t.name).append(
            {**r, "fp": fps[t.name], "prompt_tokens": 0} for r in rows if r["teacher"] == t.name
        )
    score_start = time.time()
    score(run)
    score_seconds = time.time() - score_start
    run.store.write_routes([])  # nothing routed: the oracle keeps all
    export(run)
    seconds = time.time() - start
    parts = {
        "generate": generate_seconds,
        "score": score_seconds,
        "router": 0.0,
        "other": seconds - generate_seconds - score_seconds,
    }
    return Job("distilabel GtS", len(run.prompts), seconds, parts,
               *generation_counts(cfg, run_dir), run_dir)  # fmt: skip


def reward_table(gts: Job, cfg: RunConfig) -> dict[str, dict[str, float]]:
    """prompt id -> teacher -> combined reward, from the persyn GtS run (all teachers)."""
    rewards = RunArtifacts(gts.run_dir).rewards()
    return {
        pid: dict(zip(cfg.teacher_names, rewards.reward[i].tolist(), strict=True))
        for i, pid in enumerate(rewards.ids)
    }


def evaluate(job: Job, gts: Job, cfg: RunConfig) -> dict[str, Any]:
    """Mean reward of the job's dataset in the GtS reward table, how many of its answers
    differ from the GtS run's answer by the same teacher, and, for routed rows, how often
    the router picked the oracle's teacher."""
    rewards = reward_table(gts, cfg)
    fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    gts_store = RunArtifacts(gts.run_dir)
    gts_logs = {t: gts_store.generation_log(t) for t in cfg.teacher_names}
    gts_rewards = gts_store.rewards()
    oracle = dict(zip(gts_rewards.ids, gts_rewards.oracle, strict=True))
    rows = job.dataset()
    values, differ, routed, routed_oracle = [], 0, 0, 0
    for row in rows:
        pid, teacher = row["id"], row["teacher"]
        values.append(rewards[pid][teacher])
        gts_row = gts_logs[teacher].get((pid, fps[teacher]))
        differ += gts_row is None or gts_row["text"] != row["messages"][-1]["content"]
        if row["selected_by"] == "router":
            routed += 1
            routed_oracle += teacher == oracle[pid]
    return {
        "rows": len(rows),
        "mean_reward": float(np.nanmean(values)),
        "answers_differing_from_gts": differ,
        "routed": routed,
        "routed_to_oracle_teacher": routed_oracle / routed if routed else None,
    }


def best_single_teacher(gts: Job, cfg: RunConfig) -> tuple[str, float]:
    """The one teacher with the best mean reward over all prompts, and that mean."""
    table = reward_table(gts, cfg)
    means = {t: float(np.nanmean([r[t] for r in table.values()])) for t in cfg.teacher_names}
    best = max(means, key=means.__getitem__)
    return best, means[best]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def report(results: list[dict[str, Any]], args: argparse.Namespace, total: float) -> str:
    """Markdown: the largest size in full, ratios, reward given up, then scaling."""
    top = results[-1]
    jobs, evals = top["jobs"], top["eval"]
    persyn, gts, dl = (jobs[n] for n in JOBS)
    lines = [
        f"Command: `{args.command}`  ",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs; "
        f"all rows measured in one run ({total / 60:.1f} min), the three jobs in rotating "
        "order per prompt count, each from an empty run directory with the student loaded "
        "afresh.  ",
        f"Teachers: `smol-direct` and `smol-steps` (SmolLM2-135M-Instruct Q4_1, two system "
        f"prompts), each on its own llama.cpp server (llama-cpp-python, "
        f"{args.server_threads} thread{'s' * (args.server_threads > 1)} each, greedy, "
        f"max_new_tokens {args.max_new_tokens}), reached through persyn's `openai` backend "
        "and distilabel's `OpenAILLM`; `solver-verbose`, `solver-concise`, `solver-quick` "
        "(programmatic, in process). Student SmolLM2-135M-Instruct (transformers, float32). "
        f"Prompts: `demo-mix`, seed 0. persyn calibrates on {args.calibration} prompts "
        "(bradley-terry router, the demo's settings). Reward: the demo's "
        "(alpha 0.4, min-max within a prompt, math + IFEval quality).",
        "",
        f"### {top['prompts']} prompts",
        "",
        "| job | wall s | generate s | score s | router s | other s | generations "
        "(LLM) | LLM tokens | mean reward | dataset rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in JOBS:
        j, e = jobs[name], evals[name]
        p = j["parts"]
        lines.append(
            f"| {name} | {j['seconds']:.0f} | {p['generate']:.0f} | {p['score']:.0f} | "
            f"{p['router']:.0f} | {p['other']:.0f} | {j['generations']} ({j['llm_generations']}) "
            f"| {j['llm_tokens']} | {e['mean_reward']:.3f} | {e['rows']} |"
        )
    best, best_reward = top["best_single_teacher"]
    given_up = evals["persyn GtS"]["mean_reward"] - evals["persyn"]["mean_reward"]
    lines += [
        f"| best single teacher (`{best}` for all) | | | | | | | | {best_reward:.3f} | |",
        "",
        f"- persyn / persyn GtS: wall time **{ratio(persyn['seconds'], gts['seconds'])}**, "
        f"generations **{ratio(persyn['generations'], gts['generations'])}** (LLM "
        f"generations {ratio(persyn['llm_generations'], gts['llm_generations'])}, LLM "
        f"tokens {ratio(persyn['llm_tokens'], gts['llm_tokens'])}).",
        f"- persyn / distilabel GtS: wall time **{ratio(persyn['seconds'], dl['seconds'])}**, "
        f"generations **{ratio(persyn['generations'], dl['generations'])}** (LLM "
        f"generations {ratio(persyn['llm_generations'], dl['llm_generations'])}).",
        f"- Reward given up at calibration size {args.calibration}: **{given_up:.3f}** "
        f"({given_up / evals['persyn GtS']['mean_reward']:.1%} of GtS's "
        f"{evals['persyn GtS']['mean_reward']:.3f}); the best single teacher gives up "
        f"{evals['persyn GtS']['mean_reward'] - best_reward:.3f}. On the "
        f"{evals['persyn']['routed']} routed prompts the router picked the oracle's teacher "
        f"{evals['persyn']['routed_to_oracle_teacher']:.0%} of the time.",
        f"- Answers that differ from the GtS run's answer by the same teacher (same greedy "
        f"request, so 0 expected): persyn {evals['persyn']['answers_differing_from_gts']}, "
        f"distilabel {evals['distilabel GtS']['answers_differing_from_gts']}.",
        "",
        "### Scaling with the number of prompts",
        "",
        "| prompts | persyn s | persyn GtS s | distilabel GtS s | persyn generations "
        "(LLM) | GtS generations (LLM) | persyn reward | GtS reward | reward given up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        j, e = r["jobs"], r["eval"]
        lines.append(
            f"| {r['prompts']} | {j['persyn']['seconds']:.0f} | {j['persyn GtS']['seconds']:.0f}"
            f" | {j['distilabel GtS']['seconds']:.0f} | {j['persyn']['generations']} "
            f"({j['persyn']['llm_generations']}) | {j['persyn GtS']['generations']} "
            f"({j['persyn GtS']['llm_generations']}) | {e['persyn']['mean_reward']:.3f} | "
            f"{e['persyn GtS']['mean_reward']:.3f} | "
            f"{e['persyn GtS']['mean_reward'] - e['persyn']['mean_reward']:.3f} |"
        )
    return "\n".join(lines)


def measure(
    n: int,
    order: tuple[str, ...],
    base: dict[str, Any],
    servers: list[LlamaServer],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The three jobs on `n` prompts in `order`, and their datasets scored alike."""
    rtg_cfg = bench_config(base, servers, n, args.calibration, args.max_new_tokens)
    gts_cfg = bench_config(base, servers, n, n, args.max_new_tokens)
    work = Path(args.work_dir) / str(n)
    jobs: dict[str, Job] = {}
    for name in order:
        if name == "persyn":
            jobs[name] = run_persyn(name, rtg_cfg, work / "persyn")
        elif name == "persyn GtS":
            jobs[name] = run_persyn(name, gts_cfg, work / "gts")
        else:
            jobs[name] = run_distilabel(gts_cfg, work / "distilabel", args.bench_python)
        print(f"{n} prompts, {name}: {jobs[name].seconds:.0f} s, "
              f"{jobs[name].generations} generations", flush=True)  # fmt: skip
    gts = jobs["persyn GtS"]
    return {
        "prompts": n,
        "order": list(order),
        "jobs": {k: {**vars(j), "run_dir": str(j.run_dir)} for k, j in jobs.items()},
        "eval": {k: evaluate(j, gts, gts_cfg) for k, j in jobs.items()},
        "best_single_teacher": best_single_teacher(gts, gts_cfg),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 60, 120],
                        help="prompt counts, each run by all three jobs")  # fmt: skip
    parser.add_argument("--calibration", type=int, default=20,
                        help="persyn's calibration prompts (fixed across sizes)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=32, help="LLM teachers' limit")
    parser.add_argument("--server-threads", type=int, default=1, help="threads per server")
    parser.add_argument("--work-dir", default="runs/bench-rtg-vs-gts", help="run directories")
    parser.add_argument("--bench-python", default=".venv-bench/bin/python",
                        help="python of the venv with distilabel (make bench-env)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    args.command = "python bench/rtg_vs_gts.py " + " ".join(sys.argv[1:])
    if min(args.sizes) <= args.calibration:
        parser.error("every size must exceed --calibration (else nothing is routed)")
    if not Path(args.bench_python).exists():
        parser.error(f"{args.bench_python} not found: run `make bench-env` first")
    set_quiet(True)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(demo_config_path().read_text())

    start = time.time()
    servers = [LlamaServer(work, threads=args.server_threads) for _ in range(2)]
    results = []
    try:
        for server in servers:
            server.start()
        for i, n in enumerate(sorted(args.sizes)):
            results.append(measure(n, JOBS[i % 3 :] + JOBS[: i % 3], base, servers, args))
    finally:
        for server in servers:
            server.kill()
    total = time.time() - start
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = report(results, args, total)
    print(markdown)
    if not args.no_write:
        replace_section(HEADING, markdown)


if __name__ == "__main__":
    main()

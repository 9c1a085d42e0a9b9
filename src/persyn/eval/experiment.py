"""`persyn experiment`: does the personalised dataset teach the student better?

1. run (or reuse) the pipeline, copying `experiment.base_run` in first when given;
2. build every dataset of `experiment.datasets` (see `persyn.eval.baselines`) on the same
   prompts, then keep only the prompts every dataset has, so all are the same size;
3. train the same student with the same seed and budget (`student_training`) on each;
4. evaluate the untrained student and every trained one on the held-out prompts;
5. write `results.md`, `results.csv` and `results.png` in the output folder.

Students and evaluations are stored under a fingerprint of what they depend on (the
dataset's rows, the training and evaluation settings): a rerun resumes where it stopped,
a changed setting never reuses a stale result, and two identical datasets (e.g. CAR and
Strong picking the same teacher) share one student.
"""

from __future__ import annotations

import csv
import io
import random
import shutil
from pathlib import Path
from typing import Any

from persyn.artifacts import RunArtifacts
from persyn.config import ModelRef, RunConfig, fingerprint
from persyn.eval.baselines import BaselineContext, build_dataset
from persyn.eval.student import evaluate_student, held_out_prompts
from persyn.models import release_cached_model
from persyn.pipeline import Run, run_pipeline
from persyn.progress import log
from persyn.store import atomic_write_text, read_jsonl, write_jsonl
from persyn.student.sft import train_student, training_summary

BASE_STUDENT = "student (no SFT)"
COLUMNS = [
    "dataset",
    "rows",
    "teachers",
    "train_loss",
    "train_min",
    "math_accuracy",
    "ifeval_strict",
    "ifeval_loose",
    "score",
]


def output_dir(cfg: RunConfig) -> Path:
    return Path(cfg.experiment.output_dir or Path(cfg.run_dir) / "experiment")


def prepare_run(cfg: RunConfig) -> Run:
    run_dir = Path(cfg.run_dir)
    base = cfg.experiment.base_run
    if base and not RunArtifacts(run_dir).marker("prepare"):
        log(f"experiment: copying {base} into {run_dir}")
        shutil.copytree(base, run_dir, dirs_exist_ok=True)
    run_pipeline(cfg)
    return Run.open(cfg)


def experiment_prompts(run: Run) -> list[str]:
    ex = run.cfg.experiment
    ids = [p.id for p in run.prompts]
    if ex.size is None or ex.size >= len(ids):
        return ids
    # A named stream: `Random(seed).sample` would repeat the calibration draw's prefix.
    return sorted(random.Random(f"persyn-experiment:{ex.seed}").sample(ids, ex.size))


def build_datasets(run: Run, out: Path) -> dict[str, Path]:
    """One JSONL per dataset, all restricted to the prompts every dataset has."""
    ctx = BaselineContext(run, experiment_prompts(run), run.cfg.experiment)
    full: dict[str, list[dict[str, Any]]] = {}
    for name in run.cfg.experiment.datasets:
        log(f"experiment: building dataset {name}")  # cheap: answers and scores are cached
        full[name] = build_dataset(name, ctx)
    common = set.intersection(*({r["id"] for r in rows} for rows in full.values()))
    paths = {}
    for name, rows in full.items():
        kept = [r for r in rows if r["id"] in common]
        if len(kept) < len(rows):
            log(f"experiment: {name}: {len(rows) - len(kept)} rows dropped to equalise sizes")
        paths[name] = out / "datasets" / f"{name}.jsonl"
        write_jsonl(paths[name], kept)
    return paths


def _shares(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["teacher"]] = counts.get(r["teacher"], 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return " ".join(f"{t} {n / len(rows):.0%}" for t, n in ranked)


def run_experiment(cfg: RunConfig) -> list[dict[str, Any]]:
    """Every step above; returns the result rows (also written to the output folder)."""
    out = output_dir(cfg)
    held_out_prompts(cfg)  # fail on a missing evaluation set before any training
    run = prepare_run(cfg)
    paths = build_datasets(run, out)
    results: list[dict[str, Any]] = []
    eval_fp = fingerprint(cfg.evaluation)
    if cfg.experiment.include_base_student:
        release_cached_model()
        base_dir = out / "eval" / f"base-{fingerprint(cfg.student, eval_fp)}"
        metrics = evaluate_student(cfg, cfg.student, base_dir, run.executor)
        results.append({"dataset": BASE_STUDENT, "rows": 0, "teachers": "", **metrics})
    for name, path in paths.items():
        rows = read_jsonl(path)
        key = fingerprint(
            [r["messages"] for r in rows],
            cfg.student_training,
            cfg.student.model_dump(exclude={"family"}),
        )
        release_cached_model()  # training loads its own copy of the student
        final = train_student(cfg, path, out / "students" / key)
        release_cached_model()
        trained = ModelRef(model=str(final), dtype=cfg.student.dtype)
        metrics = evaluate_student(cfg, trained, out / "eval" / f"{key}-{eval_fp}", run.executor)
        summary = training_summary(final)
        results.append(
            {
                "dataset": name,
                "rows": len(rows),
                "teachers": _shares(rows),
                "train_loss": summary["train_loss"],
                "train_min": (summary["runtime_s"] or 0) / 60,
                **metrics,
            }
        )
        log(f"experiment: {name}: score {_fmt(metrics['score'])}")
        write_results(results, out)  # after each student, so a long run shows results early
    return results


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def results_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |" for r in results]
    return "\n".join(lines) + "\n"


def results_csv(results: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    return buffer.getvalue()


def plot_results(results: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per dataset: math accuracy, IFEval strict, and their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [
        ("math_accuracy", "math accuracy"),
        ("ifeval_strict", "IFEval strict"),
        ("score", "mean"),
    ]
    x = np.arange(len(results))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(results)), 4))
    for k, (key, label) in enumerate(metrics):
        values = [r.get(key) or 0.0 for r in results]
        ax.bar(x + (k - (len(metrics) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [r["dataset"] for r in results], rotation=30, ha="right")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[dict[str, Any]], out: Path) -> None:
    atomic_write_text(out / "results.md", results_markdown(results))
    atomic_write_text(out / "results.csv", results_csv(results))
    plot_results(results, out / "results.png")
    log(f"experiment: results in {out} (results.md, results.csv, results.png)")

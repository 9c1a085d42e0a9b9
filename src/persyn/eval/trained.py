"""Train a student on a dataset, once per training seed, and evaluate each on held-out
prompts: what `persyn experiment` does per dataset and `persyn tune` per reward setting.

Each (dataset, seed) student and its evaluation is stored under a fingerprint of what it
depends on (the dataset's messages, the training settings with the seed, the student; the
evaluation settings and prompts), so a killed run resumes seed by seed, a changed setting
never reuses a stale result, and two identical datasets share one student.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts import ExperimentFiles, StudentEvalFiles
from persyn.config import ModelRef, RunConfig, fingerprint
from persyn.eval.results import fmt
from persyn.eval.student import evaluate_student
from persyn.executors import Executor
from persyn.models import release_cached_model
from persyn.progress import log
from persyn.store import atomic_write_json, read_jsonl
from persyn.student.sft import train_student, training_summary
from persyn.teachers.base import Prompt

METRICS = ["math_accuracy", "ifeval_strict", "ifeval_loose", "score"]


def training_seeds(cfg: RunConfig) -> list[int]:
    return cfg.experiment.seeds or [cfg.student_training.seed]


def train_and_evaluate(
    cfg: RunConfig,
    name: str,
    path: Path,
    held_out: list[Prompt],
    eval_fp: str,
    out: Path,
    executor: Executor,
    seeds: list[int] | None = None,
    stage: str = "experiment",
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One student per training seed (`seeds`, default `training_seeds`) on the dataset
    at `path`, each evaluated on `held_out`: the result row (metrics the mean over seeds,
    `seed_scores` each seed's score), the scores [seeds, prompts] and the prompts' task
    kinds.

    Each (dataset, seed) student and its evaluation is stored by fingerprint
    (`stored_student`), so a killed experiment resumes seed by seed.
    `stage` names the command in the log."""
    seeds = seeds or training_seeds(cfg)
    files = ExperimentFiles(out)
    rows = read_jsonl(path)
    messages = [r["messages"] for r in rows]
    per_seed: list[dict[str, Any]] = []
    scores, tasks = [], np.array([], dtype=str)
    for seed in seeds:
        seeded = seeded_config(cfg, seed)
        key, evaluation = stored_student(files, seeded, messages, eval_fp)
        metrics, summary = evaluated(evaluation)
        if metrics is None or summary is None:
            release_cached_model()  # training loads its own copy of the student
            final = train_student(seeded, path, files.student(key))
            release_cached_model()
            trained = ModelRef(model=str(final), dtype=cfg.student.dtype)
            started = time.perf_counter()
            metrics = evaluate_student(seeded, trained, evaluation.folder, executor, held_out)
            # beside the training runtime: what a student costs in all (`persyn tune
            # --dry-run` and the replication's cost of tuning read both)
            evaluation_s = round(time.perf_counter() - started, 4)
            summary = {**training_summary(final), "evaluation_s": evaluation_s}
            atomic_write_json(evaluation.training, summary)
        per_seed.append(
            {
                **metrics,
                "train_loss": summary["train_loss"],
                "train_min": (summary["runtime_s"] or 0) / 60,
            }
        )
        seed_scores, tasks = eval_scores(evaluation)
        scores.append(seed_scores)
        if len(seeds) > 1:
            log(f"{stage}: {name}, seed {seed}: score {fmt(metrics['score'])}")
    row = {"dataset": name, "rows": len(rows), "teachers": teacher_shares(rows), **per_seed[0]}
    for column in ("train_loss", "train_min", *METRICS):
        values = [m[column] for m in per_seed if m.get(column) is not None]
        row[column] = float(np.mean(values)) if values else None
    row["seed_scores"] = [m["score"] for m in per_seed]
    if len(per_seed) > 1 and "lm_eval" in row:  # not averaged: each seed's, by seed
        row["lm_eval"] = {str(s): m.get("lm_eval") for s, m in zip(seeds, per_seed, strict=True)}
    return row, np.stack(scores), tasks


def seeded_config(cfg: RunConfig, seed: int) -> RunConfig:
    """`cfg` training with `seed`."""
    training = cfg.student_training.model_copy(update={"seed": seed})
    return cfg.model_copy(update={"student_training": training})


def stored_student(
    files: ExperimentFiles, seeded: RunConfig, messages: list[Any], eval_fp: str
) -> tuple[str, StudentEvalFiles]:
    """(the key a (dataset, seed) student is stored under, where its evaluation on the
    prompts of `eval_fp` is): the key fingerprints the dataset's messages, the training
    settings with the seed (`seeded_config`) and the student (for `student_training.seed`
    the key a single-seed experiment always had)."""
    student = seeded.student.model_dump(exclude={"family"})
    key = fingerprint(messages, seeded.student_training, student)
    return key, files.evaluation(f"{key}-{eval_fp}")


def evaluated(evaluation: StudentEvalFiles) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(metrics, training record) of a student evaluated before, else Nones. The
    evaluation and the record are small and enough for the results: an experiment resumed
    where the student checkpoints are gone (they are large; experiments that take several
    sessions keep only these) trains nothing again."""
    if not (evaluation.metrics.is_file() and evaluation.training.is_file()):
        return None, None
    metrics = json.loads(evaluation.metrics.read_text())
    metrics.pop("model", None)
    return metrics, json.loads(evaluation.training.read_text())


def teacher_shares(rows: list[dict[str, Any]]) -> str:
    """Each teacher's share of the rows, largest first: "a 60% b 40%"."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["teacher"]] = counts.get(r["teacher"], 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return " ".join(f"{t} {n / len(rows):.0%}" for t, n in ranked)


def eval_scores(evaluation: StudentEvalFiles) -> tuple[np.ndarray, np.ndarray]:
    """(score, task kind) per held-out prompt, in prompt order: NaN and "" where no
    verifier applies. Every student has the same prompts, so the same kinds."""
    rows = read_jsonl(evaluation.scores)
    scores = np.array([np.nan if r["score"] is None else r["score"] for r in rows], dtype=float)
    return scores, np.array([r["task"] or "" for r in rows])

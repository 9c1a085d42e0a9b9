"""`persyn experiment`: does the personalised dataset teach the student better?

1. run (or reuse) the pipeline, copying `experiment.base_run` in first when given;
2. build every dataset of `experiment.datasets` (see `persyn.eval.baselines`) on the same
   prompts, drawn from the run's routed prompts only (`experiment_prompts`), then keep
   only the prompts every dataset has, so all are the same size;
3. train the same student with the same budget (`student_training`) on each, once per
   training seed (`experiment.seeds`, default one: `student_training.seed`);
4. evaluate the untrained student and every trained one on the held-out prompts, after
   checking that none of them equals a prompt of the run's prompt table (normalised text,
   `persyn.eval.student.check_held_out`): a student is never tested on what it could have
   been trained on;
5. write `results.md`, `results.csv`, `results.png` and `per_prompt.json` (every
   student's per-prompt scores) in the output folder, with paired
   bootstrap 95% intervals (`persyn.eval.stats`) of every score and of every dataset's
   difference from PerSyn, resampling the same evaluation prompts (and training seeds)
   for all.

Students and evaluations are stored under a fingerprint of what they depend on (the
dataset's rows, the training settings with the seed, the evaluation settings): a rerun
resumes where it stopped (student by student, seed by seed),
a changed setting never reuses a stale result, and two identical datasets (e.g. CAR and
Strong picking the same teacher) share one student.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts import ExperimentFiles, RunArtifacts, StudentEvalFiles
from persyn.config import ModelRef, RunConfig, fingerprint
from persyn.eval.baselines import BaselineContext, build_dataset
from persyn.eval.results import fmt, write_results
from persyn.eval.stats import paired_bootstrap
from persyn.eval.student import check_held_out, evaluate_student, held_out_prompts
from persyn.executors import Executor
from persyn.models import release_cached_model
from persyn.pipeline import Run, run_pipeline, run_stage
from persyn.progress import log
from persyn.store import atomic_write_json, read_jsonl, write_jsonl
from persyn.student.sft import train_student, training_summary
from persyn.teachers.base import Prompt

BASE_STUDENT = "student (no SFT)"
REFERENCE = "persyn"  # the dataset every other one is compared with
METRICS = ["math_accuracy", "ifeval_strict", "ifeval_loose", "score"]


def output_dir(cfg: RunConfig) -> Path:
    return Path(cfg.experiment.output_dir or RunArtifacts(cfg.run_dir).experiment_dir())


def prepare_run(cfg: RunConfig) -> tuple[Run, list[Prompt]]:
    """The finished run and the checked held-out prompts.

    The held-out check runs on the prompt table (the `prepare` stage) before the rest of
    the pipeline, so an overlap fails in seconds, not after the generations.
    """
    run_dir = Path(cfg.run_dir)
    base = cfg.experiment.base_run
    table = Run.open(cfg)
    if base and not RunArtifacts(run_dir).marker("prepare"):
        log(f"experiment: copying {base} into {run_dir}")
        shutil.copytree(base, run_dir, dirs_exist_ok=True)
        table.claim(replace=True)  # the copy is this config's to reuse, whatever made it
    run_stage(table, "prepare")
    held_out = check_held_out(
        held_out_prompts(cfg), table.prompts, drop=cfg.evaluation.exclude_training_prompts
    )
    run_pipeline(cfg)
    return Run.open(cfg), held_out


def experiment_prompts(run: Run) -> list[str]:
    """The prompts every dataset is built on: a seeded draw of the routed prompts.

    Never calibration prompts: there every teacher answered and was scored, so PerSyn's row
    is the oracle's choice (Generate then Select), which would credit the router with
    choices it did not make; PerSyn's rows here are all the router's.
    """
    ex = run.cfg.experiment
    ids = run.store.split().routed
    if ex.size is not None and ex.size > len(ids):
        log(
            f"experiment: size {ex.size} > {len(ids)} routed prompts (calibration prompts "
            f"train no compared student): every dataset has {len(ids)} prompts"
        )
    if ex.size is None or ex.size >= len(ids):
        return ids
    # A named stream: `Random(seed).sample` would repeat the calibration draw's prefix.
    return sorted(random.Random(f"persyn-experiment:{ex.seed}").sample(ids, ex.size))


def build_datasets(run: Run, out: Path) -> dict[str, Path]:
    """One JSONL per dataset, all restricted to the prompts every dataset has."""
    full: dict[str, list[dict[str, Any]]] = {}
    # Baselines answer and score into the run's own logs: hold the run, as the stages do.
    with run.store.lock():
        ctx = BaselineContext(run, experiment_prompts(run), run.cfg.experiment)
        for name in run.cfg.experiment.datasets:
            log(f"experiment: building dataset {name}")  # cheap: answers, scores are cached
            full[name] = build_dataset(name, ctx)
    common = set.intersection(*({r["id"] for r in rows} for rows in full.values()))
    paths = {}
    for name, rows in full.items():
        kept = [r for r in rows if r["id"] in common]
        if len(kept) < len(rows):
            log(f"experiment: {name}: {len(rows) - len(kept)} rows dropped to equalise sizes")
        paths[name] = ExperimentFiles(out).dataset(name)
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
    files = ExperimentFiles(out)
    held_out_prompts(cfg)  # fail on a missing evaluation set before any work
    run, held_out = prepare_run(cfg)
    paths = build_datasets(run, out)
    results: list[dict[str, Any]] = []
    per_prompt: dict[str, np.ndarray] = {}  # [seeds, prompts] per dataset
    tasks = np.array([], dtype=str)  # the prompts' task kinds, read with the first scores
    # The prompts evaluated, not just the settings: the check may have left some out.
    eval_fp = fingerprint(cfg.evaluation, [p.id for p in held_out])
    if cfg.experiment.include_base_student:
        release_cached_model()
        base_eval = files.evaluation(f"base-{fingerprint(cfg.student, eval_fp)}")
        metrics = evaluate_student(cfg, cfg.student, base_eval.folder, run.executor, held_out)
        results.append({"dataset": BASE_STUDENT, "rows": 0, "teachers": "", **metrics})
        scores, tasks = _scores(base_eval)
        per_prompt[BASE_STUDENT] = scores[None, :]
    for name, path in paths.items():
        row, per_prompt[name], tasks = train_and_evaluate(
            cfg, name, path, held_out, eval_fp, out, run.executor
        )
        results.append(row)
        log(f"experiment: {name}: score {fmt(row['score'])}")
        add_intervals(results, per_prompt, tasks, cfg)
        write_results(results, out)  # after each student, so a long run shows results early
        write_per_prompt(per_prompt, tasks, held_out, out, training_seeds(cfg))
    return results


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
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One student per training seed on the dataset at `path`, each evaluated on
    `held_out`: the result row (metrics the mean over seeds, `seed_scores` each seed's
    score), the scores [seeds, prompts] and the prompts' task kinds.

    Each (dataset, seed) student and its evaluation is stored under a fingerprint of the
    rows and the training settings with that seed (for `student_training.seed` the key a
    single-seed experiment always had), so a killed experiment resumes seed by seed."""
    files = ExperimentFiles(out)
    rows = read_jsonl(path)
    messages = [r["messages"] for r in rows]
    per_seed: list[dict[str, Any]] = []
    scores, tasks = [], np.array([], dtype=str)
    for seed in training_seeds(cfg):
        training = cfg.student_training.model_copy(update={"seed": seed})
        seeded = cfg.model_copy(update={"student_training": training})
        key = fingerprint(messages, training, cfg.student.model_dump(exclude={"family"}))
        evaluation = files.evaluation(f"{key}-{eval_fp}")
        metrics, summary = evaluated(evaluation)
        if metrics is None or summary is None:
            release_cached_model()  # training loads its own copy of the student
            final = train_student(seeded, path, files.student(key))
            release_cached_model()
            trained = ModelRef(model=str(final), dtype=cfg.student.dtype)
            metrics = evaluate_student(seeded, trained, evaluation.folder, executor, held_out)
            summary = training_summary(final)
            atomic_write_json(evaluation.training, summary)
        per_seed.append(
            {
                **metrics,
                "train_loss": summary["train_loss"],
                "train_min": (summary["runtime_s"] or 0) / 60,
            }
        )
        seed_scores, tasks = _scores(evaluation)
        scores.append(seed_scores)
        if len(training_seeds(cfg)) > 1:
            log(f"experiment: {name}, seed {seed}: score {fmt(metrics['score'])}")
    row = {"dataset": name, "rows": len(rows), "teachers": _shares(rows), **per_seed[0]}
    for column in ("train_loss", "train_min", *METRICS):
        values = [m[column] for m in per_seed if m.get(column) is not None]
        row[column] = float(np.mean(values)) if values else None
    row["seed_scores"] = [m["score"] for m in per_seed]
    if len(per_seed) > 1 and "lm_eval" in row:  # not averaged: each seed's, by seed
        row["lm_eval"] = {
            str(s): m.get("lm_eval") for s, m in zip(training_seeds(cfg), per_seed, strict=True)
        }
    return row, np.stack(scores), tasks


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


def write_per_prompt(
    per_prompt: dict[str, np.ndarray],
    tasks: np.ndarray,
    prompts: list[Prompt],
    out: Path,
    seeds: list[int],
) -> None:
    """`per_prompt.json`: every student's score per held-out prompt, for other tests:
    `scores` the mean over a dataset's training seeds, `seed_scores` each seed's (`seeds`;
    the untrained student has one)."""

    def plain(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values.tolist()]

    with warnings.catch_warnings():  # a prompt no verifier scores is NaN for every seed
        warnings.simplefilter("ignore", RuntimeWarning)
        means = {name: np.nanmean(s, axis=0) for name, s in per_prompt.items()}
    atomic_write_json(
        ExperimentFiles(out).per_prompt,
        {
            "prompt_ids": [p.id for p in prompts],
            "tasks": tasks.tolist(),
            "seeds": seeds,
            "scores": {name: plain(m) for name, m in means.items()},
            "seed_scores": {name: [plain(row) for row in s] for name, s in per_prompt.items()},
        },
    )


def _scores(evaluation: StudentEvalFiles) -> tuple[np.ndarray, np.ndarray]:
    """(score, task kind) per held-out prompt, in prompt order: NaN and "" where no
    verifier applies. Every student has the same prompts, so the same kinds."""
    rows = read_jsonl(evaluation.scores)
    scores = np.array([np.nan if r["score"] is None else r["score"] for r in rows], dtype=float)
    return scores, np.array([r["task"] or "" for r in rows])


def add_intervals(
    results: list[dict[str, Any]],
    per_prompt: dict[str, np.ndarray],
    tasks: np.ndarray,
    cfg: RunConfig,
) -> None:
    """Fill the CI columns of `results` (paired bootstrap over the held-out prompts and,
    where `per_prompt` holds several seeds' scores [seeds, prompts], the seeds).

    Prompts no verifier scores carry no score and are left out, as `score` leaves them out.
    """
    scored = tasks != ""
    ex = cfg.experiment
    own, diffs = paired_bootstrap(
        {name: s[..., scored] for name, s in per_prompt.items()},
        tasks[scored],
        REFERENCE,
        resamples=ex.bootstrap_resamples,
        seed=ex.seed,
        level=ex.confidence,
    )
    for row in results:
        name = row["dataset"]
        if name in own:
            row.update(score_low=own[name].low, score_high=own[name].high)
        if name in diffs and name != REFERENCE:
            d = diffs[name]
            row.update(vs_persyn=d.estimate, vs_persyn_low=d.low, vs_persyn_high=d.high)

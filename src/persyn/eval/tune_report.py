"""What `persyn tune` writes and prints: the table (`tune.md`, `tune.csv`, `tune.json`),
the plot (`tune.png`: score per setting with its interval), `choice.json`, and the plan
(what a tune will cost) printed before it trains."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import (
    ExperimentFiles,
    RunArtifacts,
    StudentEvalFiles,
    StudentFiles,
    TuneFiles,
)
from persyn.config import ConfigError, RunConfig
from persyn.data import load_prompts
from persyn.eval.results import fmt
from persyn.eval.trained import evaluated, seeded_config, stored_student
from persyn.eval.tune import (
    Setting,
    TuneResult,
    pilot_config,
    pilot_dataset,
    pilot_ids,
    tune_settings,
    validation_fingerprint,
    validation_prompts,
)
from persyn.progress import log
from persyn.stages.common import teacher_fingerprint
from persyn.store import atomic_write_json, atomic_write_text, read_jsonl

if TYPE_CHECKING:
    from persyn.run import Run

COLUMNS = [
    "setting",
    "alpha",
    "signal",
    "rows",
    "teachers",
    "train_loss",
    "score",
    "score_low",
    "score_high",
    "vs_reference",
    "vs_reference_low",
    "vs_reference_high",
    "chosen",
]


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3f}"


def tune_markdown(result: TuneResult, level: float) -> str:
    """The table: one row per setting, the score with its interval and the difference
    from the reference with its interval; then the choice and why."""
    lines = [
        f"Pilot students per reward setting; score on the validation prompts with "
        f"{level:.0%} paired bootstrap intervals; reference: {result.reference.name}",
        "",
        "| setting | alpha | signal | rows | teachers | score | interval | vs reference "
        "| interval | chosen |",
        "|---|---:|---|---:|---|---:|---|---:|---|:-:|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r['setting']} | {r['alpha']:g} | {r['signal']} | {r['rows']} | "
            f"{r['teachers']} | {fmt(r['score'])} | [{fmt(r['score_low'])}, "
            f"{fmt(r['score_high'])}] | {_signed(r['vs_reference'])} | "
            f"[{_signed(r['vs_reference_low'])}, {_signed(r['vs_reference_high'])}] | "
            f"{'yes' if r['chosen'] else ''} |"
        )
    return "\n".join([*lines, "", f"Choice: {result.chosen.name}. {result.reason}.", ""])


def tune_csv(result: TuneResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.rows)
    return buffer.getvalue()


def _number(value: float | None, missing: float = 0.0) -> float:
    return missing if value is None or math.isnan(value) else value


def plot_tune(result: TuneResult, path: Path) -> None:
    """One bar per setting: its score, the interval as an error bar, the chosen one and
    the reference marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    scores = [_number(r["score"]) for r in rows]
    low = [_number(r["score_low"], s) for r, s in zip(rows, scores, strict=True)]
    high = [_number(r["score_high"], s) for r, s in zip(rows, scores, strict=True)]
    # clipped at 0: a percentile interval need not contain the point estimate
    errors = np.clip([np.subtract(scores, low), np.subtract(high, scores)], 0, None)
    colors = ["tab:green" if r["chosen"] else "tab:blue" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.0 * len(rows)), 4))
    x = np.arange(len(rows))
    ax.bar(x, scores, yerr=errors, capsize=4, color=colors)
    labels = [
        r["setting"] + (" (reference)" if r["setting"] == result.reference.name else "")
        for r in rows
    ]
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.set_title(f"chosen: {result.chosen.name} (bars: bootstrap intervals)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_tune(result: TuneResult, files: TuneFiles, level: float) -> None:
    atomic_write_text(files.table_md, tune_markdown(result, level))
    atomic_write_text(files.table_csv, tune_csv(result))
    atomic_write_json(files.table_json, {"rows": result.rows, **result.choice()})
    plot_tune(result, files.plot)
    atomic_write_json(files.choice, result.choice())
    log(f"tune: {result.chosen.name}: {result.reason} (table in {files.table_md})")


def tune_plan(run: Run) -> list[str]:
    """What a tune will cost, from the config and what the run directory holds, as lines
    to print before any training: pilot students (those done cost nothing), examples and
    tokens, validation answers, generations (none) and wall time (`_time`)."""
    cfg: RunConfig = run.cfg
    tune = cfg.tune
    settings, reference = tune_settings(cfg)
    split = run.store.split() if run.store.marker("prepare") else None
    calibration = len(split.calibration) if split else cfg.calibration.size
    rows = min(tune.max_rows or calibration, calibration)
    tc = cfg.student_training
    examples = tune.max_steps * tc.batch_size * tc.gradient_accumulation_steps
    answer_tokens = _mean_answer_tokens(run, split.calibration if split else [])
    students = len(settings) * len(tune.seeds)
    validation = len(load_prompts(tune.validation)) if tune.validation else None
    others = [s for s in {s.signal for s in settings} if s != cfg.rewards.learnability.name]
    lines = [
        f"tune: {len(settings)} reward settings ({', '.join(s.name for s in settings)}; "
        f"reference {reference.name}) x {len(tune.seeds)} seed(s): at most {students} pilot "
        "students (settings that pick the same answers share one)",
        f"  each: {tune.max_steps} steps of {tc.method} SFT, {examples} examples seen, drawn "
        f"from {rows} calibration prompts",
        "  pilot answers: "
        + (
            f"routed: {len(settings)} settings x {tune.pilot_folds} folds = "
            f"{len(settings) * tune.pilot_folds} fits of the run's router ({cfg.router.kind}), "
            f"each on about {calibration - calibration // tune.pilot_folds} calibration prompts"
            if tune.pilot_answers == "routed"
            else "oracle: each prompt's best-rewarded answer (no router fit)"
        ),
        "  training tokens: "
        + (
            f"about {examples * answer_tokens:,.0f} answer tokens per student (estimate: "
            "mean calibration answer length x examples seen; prompts add more)"
            if answer_tokens
            else "unknown until the calibration answers exist"
        ),
        "  evaluation: "
        + (
            f"{validation} validation prompts x at most {students} students = at most "
            f"{validation * students} student answers of at most "
            f"{cfg.evaluation.max_new_tokens} tokens"
            if validation is not None
            else "tune.validation is not set (required)"
        ),
        "  new teacher generations: 0 (pilot datasets reuse the calibration answers"
        + ("" if split else "; the run's own calibrate stage makes those first")
        + ")",
    ]
    done, left = tune_pilots(run, settings) if split else ([], students)
    lines += [
        f"  pilots: {len(done)} done (stored by fingerprint: they cost nothing again), "
        f"{left} to train",
        f"  time: {_time(run, done, left)}",
    ]
    if others:
        lines.insert(
            5,
            f"  rescoring: the calibration answers once more with the student for "
            f"{', '.join(others)} (forward passes, no generation)",
        )
    return lines


def _mean_answer_tokens(run: Run, ids: list[str]) -> float | None:
    """Mean completion tokens of the calibration answers present, if any."""
    counts = []
    wanted = set(ids)
    for teacher in run.cfg.teachers:
        log_ = run.store.generation_log(teacher.name)
        fp = teacher_fingerprint(teacher)
        for pid in wanted:
            row = log_.get((pid, fp))
            if row is not None and row.get("completion_tokens"):
                counts.append(row["completion_tokens"])
    return sum(counts) / len(counts) if counts else None


def tune_pilots(run: Run, settings: list[Setting]) -> tuple[list[dict[str, Any]], int]:
    """(the training records of the pilot students trained and evaluated already, how many
    are left). A setting's pilots are known from the dataset the last tune wrote for it
    (rows of the prompts the pilots draw): settings with the same rows share a student, and
    one whose student and evaluation are stored under their fingerprints is done. A setting
    without such a dataset counts a pilot per seed (its rows, so its students, are unknown
    before its scores are mixed)."""
    cfg = pilot_config(run.cfg)
    try:
        validation = validation_prompts(cfg, run.prompts)
    except ConfigError:  # the tune itself says so; nothing of it can be done yet
        return [], len(settings) * len(cfg.tune.seeds)
    eval_fp = validation_fingerprint(cfg, validation)
    files = run.store.tune_files()
    drawn = set(pilot_ids(run))
    pilots: dict[str, StudentEvalFiles] = {}  # by student key: shared students once
    unknown = 0
    for setting in settings:
        path = pilot_dataset(files, cfg, setting)
        rows = read_jsonl(path) if path.is_file() else []
        if not rows or not {r["id"] for r in rows} <= drawn:
            unknown += len(cfg.tune.seeds)
            continue
        messages = [r["messages"] for r in rows]
        for seed in cfg.tune.seeds:
            key, evaluation = stored_student(files, seeded_config(cfg, seed), messages, eval_fp)
            pilots[key] = evaluation
    records = [evaluated(e)[1] for e in pilots.values()]
    done = [r for r in records if r is not None]
    return done, unknown + len(records) - len(done)


def _time(run: Run, done: list[dict[str, Any]], left: int) -> str:
    """Wall time of the pilots left: measured on this tune's pilots done (training and
    evaluation), else the pilot steps at the seconds per step of the students trained in
    the run directory, else not estimated."""
    if left == 0:
        return "none left: every pilot is done"
    if done:
        per_pilot = np.mean([(r.get("runtime_s") or 0) + r.get("evaluation_s", 0) for r in done])
        untimed = sum("evaluation_s" not in r for r in done)
        return (
            f"measured: {duration(per_pilot)} per pilot (train + evaluate, mean of "
            f"{len(done)} done), about {duration(left * per_pilot)} for the {left} left"
            + (
                f" (training only for {untimed} of them, whose evaluation was not timed: "
                "more in fact)"
                if untimed
                else ""
            )
        )
    trained = [r for r in _training_records(run.store) if r.get("runtime_s") and r.get("steps")]
    if not trained:
        return (
            "not estimated: no student of this run directory has trained yet (tune.md gives "
            "each pilot's training minutes once it ran)"
        )
    per_step = sum(r["runtime_s"] for r in trained) / sum(r["steps"] for r in trained)
    steps = run.cfg.tune.max_steps
    return (
        f"estimate: about {duration(left * steps * per_step)} for the {left} left "
        f"({steps} steps x {per_step:.1f} s a step, measured on {len(trained)} student(s) "
        "trained in this run directory; evaluation not included)"
    )


def duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def _training_records(store: RunArtifacts) -> list[dict[str, Any]]:
    """The training records of every student trained in the run directory: pilots (of any
    grid), the experiment's students and the run's own."""
    records = []
    for folder in (store.tune_files().folder, store.experiment_dir()):
        files = ExperimentFiles(folder)
        pattern = files.evaluation("*").training.relative_to(folder)
        records += [json.loads(p.read_text()) for p in folder.glob(str(pattern))]
    own = StudentFiles.record(StudentFiles(store.student_dir()).final)
    return records + ([json.loads(own.read_text())] if own.is_file() else [])

"""What `persyn tune` writes and prints: the table (`tune.md`, `tune.csv`, `tune.json`),
the plot (`tune.png`: score per setting with its interval), `choice.json`, and the plan
(what a tune will cost) printed before it trains."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persyn.artifacts import TuneFiles
from persyn.config import RunConfig
from persyn.data import load_prompts
from persyn.eval.results import fmt
from persyn.eval.tune import TuneResult, tune_settings
from persyn.progress import log
from persyn.stages.common import teacher_fingerprint
from persyn.store import atomic_write_json, atomic_write_text

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
    import numpy as np

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
    to print before any training."""
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
        "students (settings whose oracle picks the same answers share one)",
        f"  each: {tune.max_steps} steps of {tc.method} SFT, {examples} examples seen, drawn "
        f"from {rows} calibration prompts",
        "  training tokens: "
        + (
            f"about {examples * answer_tokens:,.0f} answer tokens per student (estimate: "
            "mean calibration answer length x examples seen; prompts add more)"
            if answer_tokens
            else "unknown until the calibration answers exist"
        ),
        "  evaluation: "
        + (
            f"{validation} validation prompts x {students} students = {validation * students} "
            f"student answers of at most {cfg.evaluation.max_new_tokens} tokens"
            if validation is not None
            else "tune.validation is not set (required)"
        ),
        "  new teacher generations: 0 (pilot datasets reuse the calibration answers"
        + ("" if split else "; the run's own calibrate stage makes those first")
        + ")",
        "  time: not estimated; each pilot student's training minutes are in tune.md",
    ]
    if others:
        lines.insert(
            4,
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

"""The experiment's results table: `results.md` (with bootstrap intervals and each training
seed's score), `results.csv` and `results.png`, from the result rows `run_experiment`
builds."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from persyn.artifacts import ExperimentFiles
from persyn.progress import log
from persyn.store import atomic_write_text

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
# Interval columns: the score's own CI, and score - PerSyn's with its CI (paired); then
# each training seed's score (the table's `score` is their mean).
CI_COLUMNS = ["score_low", "score_high", "vs_persyn", "vs_persyn_low", "vs_persyn_high"]
SEED_COLUMN = "score_per_seed"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _ci(row: dict[str, Any], low: str, high: str) -> str:
    if row.get(low) is None:
        return "-"
    return f"[{row[low]:.3f}, {row[high]:.3f}]"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _per_seed(row: dict[str, Any]) -> str:
    return " / ".join(fmt(v) for v in row.get("seed_scores", []))


def results_markdown(results: list[dict[str, Any]]) -> str:
    """The results table; with intervals, `score 95% CI` and `- persyn [95% CI]` too, and
    a note on how they were drawn; with several training seeds, each seed's score."""
    header = list(COLUMNS)
    seeds = max((len(r.get("seed_scores", [])) for r in results), default=0)
    if seeds > 1:
        header += ["score per seed"]
    with_ci = any(r.get("score_low") is not None for r in results)
    if with_ci:
        header += ["score 95% CI", "score - persyn", "95% CI (paired)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [fmt(r.get(c)) for c in COLUMNS]
        if seeds > 1:
            cells += [_per_seed(r) or "-"]
        if with_ci:
            cells += [
                _ci(r, "score_low", "score_high"),
                _signed(r.get("vs_persyn")),
                _ci(r, "vs_persyn_low", "vs_persyn_high"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if with_ci:
        over = (
            f"the held-out prompts and the {seeds} training seeds (drawn independently; "
            "`score` is the mean over a dataset's seeds)"
            if seeds > 1
            else "the held-out prompts"
        )
        lines += [
            "",
            f"Intervals: percentile bootstrap resampling {over}, the same draws for every "
            "dataset, so a difference from PerSyn is paired (persyn.eval.stats).",
        ]
    return "\n".join(lines) + "\n"


def results_csv(results: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = COLUMNS + CI_COLUMNS + [SEED_COLUMN]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**r, SEED_COLUMN: _per_seed(r)} for r in results)
    return buffer.getvalue()


def _error_bars(results: list[dict[str, Any]], values: list[float]) -> Any:
    """[2, datasets] distances from each score down and up to its CI (0 without one).

    Clipped at 0: a percentile interval need not contain the point estimate (a skewed
    bootstrap distribution), and matplotlib refuses negative error bars.
    """
    if all(r.get("score_low") is None for r in results):
        return None
    import numpy as np

    low = [r.get("score_low", v) for v, r in zip(values, results, strict=True)]
    high = [r.get("score_high", v) for v, r in zip(values, results, strict=True)]
    return np.clip([np.subtract(values, low), np.subtract(high, values)], 0, None)


def plot_results(results: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per dataset: math accuracy, IFEval strict, and their mean, the mean
    with its bootstrap 95% interval as an error bar."""
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
        errors = _error_bars(results, values) if key == "score" else None
        offset = (k - (len(metrics) - 1) / 2) * width
        if errors is not None:
            label += " (bars: bootstrap CI)"
        ax.bar(x + offset, values, width, label=label, yerr=errors, capsize=3)
    ax.set_xticks(x, [r["dataset"] for r in results], rotation=30, ha="right")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[dict[str, Any]], out: Path) -> None:
    files = ExperimentFiles(out)
    atomic_write_text(files.results_md, results_markdown(results))
    atomic_write_text(files.results_csv, results_csv(results))
    plot_results(results, files.results_png)
    names = ", ".join(p.name for p in (files.results_md, files.results_csv, files.results_png))
    log(f"experiment: results in {out} ({names})")

"""`persyn report RUN_DIR`: one self-contained HTML page plus PNG plots of a finished run.

The plots (matplotlib, no display needed) are written as PNG files into the report folder
and embedded in `report.html` as data URIs, so the page can be mailed or attached on its
own. Prompts and responses are untrusted text: every string that reaches the page goes
through `html.escape`.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts import ReportFiles, RunArtifacts, student_folders
from persyn.report.card import reward_statistics
from persyn.report.coverage_html import novelty_html
from persyn.report.data import ReportData, load_artifacts
from persyn.report.headline import router_verdict
from persyn.report.html_parts import esc, excerpt, fmt_num, html_table
from persyn.report.kinds import kind_figures
from persyn.report.plots import PLOTS, cost_comparison, plot_students
from persyn.report.spend import HEADERS as SPEND_HEADERS
from persyn.report.spend import spend_line, spend_table
from persyn.report.students import students_html
from persyn.report.truncation import HEADERS, truncation_table
from persyn.store import atomic_write_text

EXAMPLE_ROWS = 16  # rows in the examples table: enough to see every teacher and both sources


def example_rows(art: ReportData) -> list[dict[str, Any]]:
    """A spread of dataset rows: the first row for each (source, teacher), then the rest
    in file order, up to `EXAMPLE_ROWS`."""
    seen: set[tuple[str, str]] = set()
    first, rest = [], []
    for row in art.dataset:
        key = (row["selected_by"], row["teacher"])
        (rest if key in seen else first).append(row)
        seen.add(key)
    return (first + rest)[:EXAMPLE_ROWS]


def _rival_scores(row: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
    """What the choice was made on: combined rewards (oracle rows) or router scores."""
    if row["selected_by"] == "oracle" and row.get("rewards"):
        return "combined reward", row["rewards"]["reward"]
    return "router score", row.get("router_scores") or {}


def _examples_html(art: ReportData) -> str:
    body = []
    for row in example_rows(art):
        prompt = "\n".join(m["content"] for m in row["messages"][:-1] if m["role"] != "system")
        label, scores = _rival_scores(row)
        ranked = sorted(scores.items(), key=lambda kv: -np.inf if kv[1] is None else -kv[1])
        rivals = "".join(
            f'<li class="{"chosen" if t == row["teacher"] else "rival"}">'
            f"{esc(t)}: {fmt_num(v)}</li>"
            for t, v in ranked
        )
        body.append(
            "<tr>"
            f'<td class="text">{esc(excerpt(prompt))}</td>'
            f'<td><b>{esc(row["teacher"])}</b><br><span class="muted">by '
            f"{esc(row['selected_by'])}, {esc(row['kind'])}</span></td>"
            f'<td class="text">{esc(excerpt(row["messages"][-1]["content"]))}</td>'
            f'<td><span class="muted">{esc(label)}</span><ol>{rivals}</ol></td>'
            "</tr>"
        )
    return (
        '<table class="examples"><thead><tr><th>prompt</th><th>chosen teacher</th>'
        "<th>response</th><th>rivals' scores</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _headline(art: ReportData) -> str:
    s = art.summary
    held = s.get("router_test") or {}
    cards = [
        ("prompts", s["prompts"]),
        ("dataset rows", s["dataset_rows"]),
        ("failed rows", s["failed_rows"]),
        ("fallback rows", s.get("fallback_rows", 0)),
        ("generations", f"{s['generations']} / {s['generate_then_select_generations']}"),
        ("router top-1 vs oracle", fmt_num(held.get("top1"), "{:.0%}")),
        (
            "router reward / oracle",
            f"{fmt_num(held.get('reward'))} / {fmt_num(held.get('oracle_reward'))}",
        ),
    ]
    return "".join(
        f'<div class="card"><div class="value">{esc(v)}</div>'
        f'<div class="muted">{esc(k)}</div></div>'
        for k, v in cards
    )


def coverage_banner(coverage: dict[str, Any] | None) -> str:
    """A warning above everything when no quality signal applied to some prompt kind (one
    line when none applied at all)."""
    coverage = coverage or {}
    uncovered = coverage.get("learnability_only_kinds", [])
    if uncovered and len(uncovered) == len(coverage["kinds"]):
        n = sum(c["prompts"] for c in coverage["kinds"].values())
        return (
            f'<div class="banner">No quality signal applied to any of the {n} calibration '
            "prompts: every teacher was ranked on the student's learnability alone, so the "
            "rewards say nothing about whether an answer is right (see rewards.quality)."
            "</div>"
        )
    lines = [
        f"No quality signal applied to the {coverage['kinds'][kind]['prompts']} calibration "
        f"prompts of kind {kind!r}: their teachers were ranked on the student's learnability "
        "alone."
        for kind in uncovered
    ]
    return "".join(f'<div class="banner">{esc(line)}</div>' for line in lines)


def coverage_html(coverage: dict[str, Any] | None) -> str:
    """What each quality signal scored, and per prompt kind how many prompts it covered."""
    if coverage is None:  # a run scored before persyn recorded coverage
        return "<p>Quality coverage was not recorded for this run (rerun `score`).</p>"
    signals = html_table(
        ["quality signal", "prompts scored", "answers scored", "could not score"],
        [
            [
                label,
                c["prompts"],
                c["answers"],
                f"{c['failed_answers']} answers ({c['failed_prompts']} prompts)",
            ]
            for label, c in coverage["signals"].items()
        ],
    )
    kinds = html_table(
        ["prompt kind", "calibration prompts", "with a quality signal"],
        [[k, c["prompts"], c["covered"]] for k, c in coverage["kinds"].items()],
    )
    return signals + kinds


def spend_html(art: ReportData) -> str:
    rows = spend_table(art.summary)
    table = "" if rows is None else html_table(SPEND_HEADERS, rows)
    return f"<p>{esc(spend_line(art.summary))}</p>{table}"


def truncation_html(art: ReportData) -> str:
    """Per teacher: answers cut at max_new_tokens (failed unless kept) and calibration
    answers longer than the student reads."""
    rows = truncation_table(art.cfg, art.summary)
    if rows is None:
        return "<p>Truncation was not counted for this run (rerun `export`).</p>"
    return (
        "<p>An answer cut at its teacher's max_new_tokens counts as failed (it loses in "
        "routing and is not exported) unless the teacher keeps such answers "
        "(generation.keep_truncated).</p>" + html_table(HEADERS, rows)
    )


def kinds_html(art: ReportData) -> str:
    """Per prompt kind: each teacher's shares (oracle, router, dataset) and mean reward."""
    parts = []
    for kind, f in kind_figures(art).items():
        parts.append(
            f"<h3>{esc(kind)}</h3><p>{f['calibration_prompts']} calibration prompts (oracle "
            f"reward {fmt_num(f['oracle_reward'])}), {f['routed_prompts']} routed prompts, "
            f"{f['dataset_rows']} dataset rows</p>"
        )
        parts.append(
            html_table(
                ["teacher", "oracle share", "router share", "dataset share", "combined mean"],
                [
                    [
                        t,
                        fmt_num(f["oracle_share"][t], "{:.1%}"),
                        fmt_num(f["router_share"][t], "{:.1%}"),
                        fmt_num(f["dataset_share"][t], "{:.1%}"),
                        fmt_num(f["reward_mean"][t]),
                    ]
                    for t in art.teachers
                ],
            )
        )
    return "".join(parts)


def _embedded(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def _sections(art: ReportData, images: dict[str, bytes]) -> str:
    def img(key: str) -> str:
        return _embedded(images[key], PLOTS[key][0])

    stats = reward_statistics(art.rewards)
    reward_table = html_table(
        ["teacher", "oracle share", "learnability mean", "quality mean", "combined mean"],
        [
            [
                t,
                fmt_num(v["oracle_share"], "{:.1%}"),
                fmt_num(v["learnability_mean"]),
                fmt_num(v["quality_mean"]),
                fmt_num(v["reward_mean"]),
            ]
            for t, v in stats.items()
        ],
    )
    held = art.router_metrics.get("test", {})
    agreement = html_table(
        ["metric", "test split", "meaning"],
        [
            ["top-1", fmt_num(held.get("top1"), "{:.1%}"), "router picks an oracle-best teacher"],
            ["hit@3", fmt_num(held.get("hit3"), "{:.1%}"), "an oracle-best teacher in its top 3"],
            [
                "pairwise accuracy",
                fmt_num(held.get("pairwise_accuracy"), "{:.1%}"),
                "teacher pairs ordered as the rewards order them",
            ],
            ["regret", fmt_num(held.get("regret")), "mean oracle reward minus routed reward"],
            [
                "captured",
                fmt_num(held.get("captured"), "{:.1%}"),
                "(router - random) / (oracle - random)",
            ],
        ],
    )
    verdict = f"<p><b>{esc(router_verdict(held))}</b></p>" if held.get("prompts") else ""
    costs = cost_comparison(art)
    cost_table = html_table(
        [
            "teacher",
            "generations",
            "GtS generations",
            "tokens",
            "GtS tokens (est.)",
            "cost",
            "GtS cost (est.)",
        ],
        [
            [
                t,
                c["generations"],
                c["gts_generations"],
                c["tokens"],
                round(c["gts_tokens"]),
                fmt_num(c["cost"], "{:.4f}"),
                fmt_num(c["gts_cost"], "{:.4f}"),
            ]
            for t, c in costs.items()
        ],
    )
    return f"""
<h2>Teacher shares</h2>{img("shares")}
<h2>Rewards</h2>{img("rewards")}{reward_table}
<h3>Quality coverage</h3>{coverage_html(art.summary.get("quality_coverage"))}
{img("learnability_quality")}
<h3>Truncated answers</h3>{truncation_html(art)}
<h2>By prompt kind</h2>
<p>The same figures for each kind of prompt: a teacher can suit one kind and not another.
Means are of the combined reward on the kind's calibration prompts.</p>
{kinds_html(art)}
<h2>Router against the oracle</h2>
<p>The router's test split: {len(art.heldout)} calibration prompts used neither to train
the router nor to pick its epoch (the validation split did that); every teacher answered
them, so the oracle's choice is known.</p>
{img("router")}{agreement}{verdict}{img("router_training")}
<h3>Novelty of routed prompts</h3>{img("novelty")}{novelty_html(art)}
<h2>Generations and cost against Generate then Select</h2>{img("generations")}{cost_table}
<h3>Spend per teacher and stage</h3>{spend_html(art)}
<h2>Examples</h2>
<p>Dataset rows with the chosen teacher and every teacher's score on the prompt (the
combined reward where the oracle chose, the router's score where the router chose).</p>
{_examples_html(art)}"""


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.muted{color:#777;font-size:.85em}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1.2em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}
.card .value{font-size:1.4em;font-weight:600}
img{max-width:100%;display:block;margin:1em 0}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.35em .6em;vertical-align:top;text-align:left}
th{background:#f4f4f4}td.text{white-space:pre-wrap;max-width:28em}
ol{margin:0;padding-left:1.3em}li.chosen{font-weight:700}
.banner{background:#fff3cd;border:1px solid #e0b252;border-radius:6px;padding:.6em 1em;margin:1em 0}
"""


def _tune_note(tuned: dict[str, Any] | None) -> str:
    """Where `persyn tune` chose the run's reward setting: which and why."""
    if not tuned or not tuned.get("used"):
        return ""
    return (
        f"<p>reward setting chosen by <code>persyn tune</code>: {esc(tuned['setting'])} "
        f"(alpha {esc(tuned['alpha'])}, {esc(tuned['learnability'])}); {esc(tuned['reason'])}</p>"
    )


def render_html(art: ReportData, images: dict[str, bytes]) -> str:
    cfg = art.cfg
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>persyn report: {esc(cfg.name)}</title>
<style>{_CSS}</style></head>
<body>
<h1>persyn report: {esc(cfg.name)}</h1>
<p class="muted">run directory {esc(art.run_dir)}; student {esc(cfg.student.model)};
alpha {esc(cfg.rewards.alpha)}, {esc(cfg.rewards.normalization)} normalisation; written
{esc(created)}</p>
{_tune_note(art.summary.get("tune"))}
{coverage_banner(art.summary.get("quality_coverage"))}
<div class="cards">{_headline(art)}</div>
{_sections(art, images)}
</body></html>
"""


def render_students(
    top: RunArtifacts, comparison: dict[str, Any], png: bytes, links: dict[str, str]
) -> str:
    """The top page of a run with several students: their comparison (`png`: its plot),
    and links to each student's report."""
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = top.config().name
    image = _embedded(png, "Students side by side")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>persyn report: {esc(name)}</title>
<style>{_CSS}</style></head>
<body>
<h1>persyn report: {esc(name)}</h1>
<p class="muted">run directory {esc(top.root)}; students {esc(", ".join(links))}; written
{esc(created)}</p>
{students_html(comparison, image, links)}
</body></html>
"""


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write `report.html` and one PNG per plot into `out_dir` (default RUN_DIR/report).
    A run with several students: each student's report in its folder, and a top page
    comparing them."""
    top = RunArtifacts(run_dir)
    pages = {name: build_report(store.root) for name, store in student_folders(top)}
    out = Path(out_dir) if out_dir is not None else top.report_dir()
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out)
    if pages:
        links = {name: os.path.relpath(page, out) for name, page in pages.items()}
        comparison = top.summary()["comparison"]
        png = plot_students(comparison)
        files.plot("students").write_bytes(png)
        atomic_write_text(files.page, render_students(top, comparison, png, links))
        return files.page
    art = load_artifacts(Path(run_dir))
    images = {key: plot(art) for key, (_title, plot) in PLOTS.items()}
    for key, png in images.items():
        files.plot(key).write_bytes(png)
    atomic_write_text(files.page, render_html(art, images))
    return files.page

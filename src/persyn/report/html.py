"""`persyn report RUN_DIR`: one self-contained HTML page plus PNG plots of a finished run.

The plots (matplotlib, no display needed) are written as PNG files into the report folder
and embedded in `report.html` as data URIs, so the page can be mailed or attached on its
own. Prompts and responses are untrusted text: every string that reaches the page goes
through `html.escape`.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts import RewardTable, RunArtifacts
from persyn.config import RunConfig
from persyn.report.card import reward_statistics
from persyn.store import atomic_write_text

EXAMPLE_ROWS = 16  # rows in the examples table: enough to see every teacher and both sources
EXCERPT_CHARS = 400  # longer prompts and responses are cut in the table


class ReportError(ValueError):
    """The run directory lacks what the report needs; the message says what to run."""


@dataclass
class ReportData:
    """Everything the report reads from a finished run directory."""

    run_dir: Path
    cfg: RunConfig
    teachers: list[str]
    prompts: dict[str, dict[str, Any]]
    rewards: RewardTable
    routes: list[dict[str, Any]]
    dataset: list[dict[str, Any]]
    summary: dict[str, Any]
    router_metrics: dict[str, Any]
    heldout: list[dict[str, Any]]


def load_artifacts(run_dir: Path) -> ReportData:
    store = RunArtifacts(run_dir)
    if store.marker("export") is None:
        raise ReportError(f"{run_dir}: the run is not finished; run `persyn run CONFIG` first")
    cfg = store.config()
    try:
        heldout = store.val_predictions()
    except FileNotFoundError as err:
        raise ReportError(str(err)) from None
    return ReportData(
        run_dir=run_dir,
        cfg=cfg,
        teachers=store.reward_teachers(),
        prompts={p.id: p.to_row() for p in store.prompts()},
        rewards=store.rewards(),
        routes=store.routes(),
        dataset=store.dataset(),
        summary=store.summary(),
        router_metrics=store.router_metrics(),
        heldout=heldout,
    )


# -- plots ------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    # A bare Figure renders with the Agg canvas: no pyplot state, no display needed.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _colors(teachers: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {t: palette(i % 10) for i, t in enumerate(teachers)}


def plot_shares(art: ReportData) -> bytes:
    """Share of prompts per teacher: oracle (calibration), router (routed), dataset."""
    s = art.summary
    series = [
        ("oracle (calibration)", s["oracle_share"]),
        ("router (routed)", s["router_share"]),
        ("dataset", s["dataset_share"]),
    ]
    fig = _figure(7, 0.5 * len(art.teachers) + 1.8)
    ax = fig.add_subplot()
    y = np.arange(len(art.teachers))
    height = 0.8 / len(series)
    for k, (label, share) in enumerate(series):
        ax.barh(y + k * height, [share[t] for t in art.teachers], height, label=label)
    ax.set_yticks(y + height, art.teachers)
    ax.invert_yaxis()
    ax.set_xlabel("share of prompts")
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("Share of prompts per teacher")
    return _png(fig)


def plot_reward_distributions(art: ReportData) -> bytes:
    """Box plots per teacher of raw learnability, raw quality and the combined reward."""
    panels = [
        ("learnability", "learnability (mean token log-prob)"),
        ("quality", "quality (raw)"),
        ("reward", f"combined reward (alpha={art.cfg.rewards.alpha})"),
    ]
    fig = _figure(11, 3.8)
    colors = _colors(art.teachers)
    for k, (kind, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        matrix = getattr(art.rewards, kind)
        columns = [matrix[~np.isnan(matrix[:, j]), j] for j in range(len(art.teachers))]
        boxes = ax.boxplot(columns, vert=False, patch_artist=True, showmeans=True)
        for patch, teacher in zip(boxes["boxes"], art.teachers, strict=True):
            patch.set_facecolor(colors[teacher])
            patch.set_alpha(0.6)
        ax.set_yticks(range(1, len(art.teachers) + 1), art.teachers if k == 0 else [])
        ax.invert_yaxis()
        ax.set_title(title, fontsize="medium")
    fig.suptitle(f"Rewards on {len(art.rewards.ids)} calibration prompts (triangle: mean)")
    return _png(fig)


def plot_learnability_quality(art: ReportData) -> bytes:
    """Each calibration response: learnability against quality, teacher means on top."""
    learn, qual = art.rewards.learnability, art.rewards.quality
    # Quality is often 0/1: a little vertical jitter keeps the points apart.
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, qual.shape)
    fig = _figure(7, 4.8)
    ax = fig.add_subplot()
    for j, (teacher, color) in enumerate(_colors(art.teachers).items()):
        ok = ~np.isnan(learn[:, j]) & ~np.isnan(qual[:, j])
        ax.scatter(learn[ok, j], qual[ok, j] + jitter[ok, j], s=10, alpha=0.35, color=color)
        if ok.any():
            ax.scatter(
                learn[ok, j].mean(),
                qual[ok, j].mean(),
                s=140,
                marker="*",
                color=color,
                edgecolors="black",
                label=teacher,
            )
    ax.set_xlabel("learnability (student's mean token log-prob)")
    ax.set_ylabel("quality (jittered)")
    ax.set_title("Learnability against quality (star: teacher mean)")
    ax.legend(fontsize="small")
    return _png(fig)


def confusion_matrix(art: ReportData) -> np.ndarray:
    """Counts [oracle teacher, router teacher] over the held-out calibration prompts."""
    index = {t: i for i, t in enumerate(art.teachers)}
    counts = np.zeros((len(art.teachers), len(art.teachers)), dtype=int)
    for row in art.heldout:
        if row["oracle"] is not None:
            counts[index[row["oracle"]], index[row["router"]]] += 1
    return counts


def plot_router(art: ReportData) -> bytes:
    """Confusion matrix against the oracle, and mean held-out reward of each policy."""
    counts = confusion_matrix(art)
    held = art.router_metrics.get("val", {})
    fig = _figure(12, 0.45 * len(art.teachers) + 3.2)
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(art.teachers))
    ax.set_xticks(ticks, art.teachers, rotation=30, ha="right")
    ax.set_yticks(ticks, art.teachers)
    for i in ticks:
        for j in ticks:
            dark = counts[i, j] > counts.max() / 2
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
    ax.set_xlabel("router's choice")
    ax.set_ylabel("oracle's choice")
    ax.set_title(f"Held-out prompts: {counts.sum()}, same teacher: {np.trace(counts)}")
    ax = fig.add_subplot(1, 2, 2)
    if held:
        policies = {
            "random teacher": held["random_reward"],
            f"best single ({art.teachers[int(held['best_fixed_teacher'])]})": held[
                "best_fixed_reward"
            ],
            "router": held["reward"],
            "oracle": held["oracle_reward"],
        }
        bars = ax.barh(
            list(policies),
            list(policies.values()),
            color=["#bbbbbb", "#999999", "#1f77b4", "#2ca02c"],
        )
        ax.bar_label(bars, fmt="%.3f", padding=3)
        ax.invert_yaxis()
        ax.set_xlim(0, max(policies.values()) * 1.2)
    ax.set_xlabel("mean combined reward")
    ax.set_title("Held-out calibration prompts")
    return _png(fig)


def plot_router_training(art: ReportData) -> bytes:
    history = art.router_metrics.get("history", [])
    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="held-out")
    if not history:
        ax.text(
            0.5,
            0.5,
            f"{art.cfg.router.kind}: no training epochs",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    if art.router_metrics.get("best_epoch") is not None:
        ax.axvline(art.router_metrics["best_epoch"], color="gray", linestyle=":", label="kept")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Bradley-Terry loss")
    ax.set_title("Router training")
    ax.legend(fontsize="small")
    return _png(fig)


def cost_comparison(art: ReportData) -> dict[str, dict[str, float]]:
    """Generations, completion tokens and cost: this run against Generate then Select.

    Generate then Select has every teacher answer every prompt; its tokens are estimated
    from each teacher's mean completion tokens per response in this run.
    """
    s = art.summary
    n_prompts, n_cal = s["prompts"], s["calibration_prompts"]
    routed = {t: sum(r["teacher"] == t for r in art.routes) for t in art.teachers}
    prices = {t.name: t.cost_per_1k_tokens for t in art.cfg.teachers}
    out: dict[str, dict[str, float]] = {}
    for t in art.teachers:
        used = n_cal + routed[t]
        tokens = s["completion_tokens"][t]
        gts_tokens = tokens / used * n_prompts if used else 0.0
        out[t] = {
            "generations": used,
            "gts_generations": n_prompts,
            "tokens": tokens,
            "gts_tokens": gts_tokens,
            "cost": s["cost"][t],
            "gts_cost": gts_tokens / 1000 * prices.get(t, 0.0),
        }
    return out


def plot_generations(art: ReportData) -> bytes:
    """Stacked per teacher: generations, tokens and cost, this run against Generate then
    Select."""
    costs = cost_comparison(art)
    panels = [
        ("generations", "generations"),
        ("tokens", "completion tokens (GtS estimated)"),
        ("cost", "cost (GtS estimated)"),
    ]
    fig = _figure(12, 3.6)
    colors = _colors(art.teachers)
    for k, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        bottoms = np.zeros(2)
        for t in art.teachers:
            values = np.array([costs[t][key], costs[t][f"gts_{key}"]], dtype=float)
            ax.bar(
                ["PerSyn", "Generate then Select"], values, bottom=bottoms, color=colors[t], label=t
            )
            bottoms += values
        if key == "cost" and not bottoms.any():
            ax.text(
                0.5,
                0.5,
                "no prices set\n(teachers' cost_per_1k_tokens = 0)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_title(title, fontsize="medium")
        if k == 0:
            ax.legend(fontsize="small")
    return _png(fig)


PLOTS = {
    "shares": ("Share of prompts per teacher", plot_shares),
    "rewards": ("Reward distributions per teacher", plot_reward_distributions),
    "learnability_quality": ("Learnability against quality", plot_learnability_quality),
    "router": ("Router against the oracle", plot_router),
    "router_training": ("Router training", plot_router_training),
    "generations": ("Generations and cost", plot_generations),
}


# -- HTML -------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + " [...]"


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
            f'<li class="{"chosen" if t == row["teacher"] else "rival"}">{_e(t)}: {_fmt(v)}</li>'
            for t, v in ranked
        )
        body.append(
            "<tr>"
            f'<td class="text">{_e(_excerpt(prompt))}</td>'
            f'<td><b>{_e(row["teacher"])}</b><br><span class="muted">by '
            f"{_e(row['selected_by'])}, {_e(row['kind'])}</span></td>"
            f'<td class="text">{_e(_excerpt(row["messages"][-1]["content"]))}</td>'
            f'<td><span class="muted">{_e(label)}</span><ol>{rivals}</ol></td>'
            "</tr>"
        )
    return (
        '<table class="examples"><thead><tr><th>prompt</th><th>chosen teacher</th>'
        "<th>response</th><th>rivals' scores</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    cells = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def _fmt(x: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else pattern.format(x)


def _headline(art: ReportData) -> str:
    s = art.summary
    held = s.get("router_heldout") or {}
    cards = [
        ("prompts", s["prompts"]),
        ("dataset rows", s["dataset_rows"]),
        ("failed rows", s["failed_rows"]),
        ("generations", f"{s['generations']} / {s['generate_then_select_generations']}"),
        ("router top-1 vs oracle", _fmt(held.get("top1"), "{:.0%}")),
        (
            "router reward / oracle",
            f"{_fmt(held.get('reward'))} / {_fmt(held.get('oracle_reward'))}",
        ),
    ]
    return "".join(
        f'<div class="card"><div class="value">{_e(v)}</div><div class="muted">{_e(k)}</div></div>'
        for k, v in cards
    )


def _sections(art: ReportData, images: dict[str, bytes]) -> str:
    def img(key: str) -> str:
        data = base64.b64encode(images[key]).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{_e(PLOTS[key][0])}">'

    stats = reward_statistics(art.rewards)
    reward_table = _table(
        ["teacher", "oracle share", "learnability mean", "quality mean", "combined mean"],
        [
            [
                t,
                _fmt(v["oracle_share"], "{:.1%}"),
                _fmt(v["learnability_mean"]),
                _fmt(v["quality_mean"]),
                _fmt(v["reward_mean"]),
            ]
            for t, v in stats.items()
        ],
    )
    held = art.router_metrics.get("val", {})
    agreement = _table(
        ["metric", "held-out", "meaning"],
        [
            ["top-1", _fmt(held.get("top1"), "{:.1%}"), "router picks an oracle-best teacher"],
            ["hit@3", _fmt(held.get("hit3"), "{:.1%}"), "an oracle-best teacher in its top 3"],
            [
                "pairwise accuracy",
                _fmt(held.get("pairwise_accuracy"), "{:.1%}"),
                "teacher pairs ordered as the rewards order them",
            ],
            ["regret", _fmt(held.get("regret")), "mean oracle reward minus routed reward"],
            [
                "captured",
                _fmt(held.get("captured"), "{:.1%}"),
                "(router - random) / (oracle - random)",
            ],
        ],
    )
    costs = cost_comparison(art)
    cost_table = _table(
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
                _fmt(c["cost"], "{:.4f}"),
                _fmt(c["gts_cost"], "{:.4f}"),
            ]
            for t, c in costs.items()
        ],
    )
    return f"""
<h2>Teacher shares</h2>{img("shares")}
<h2>Rewards</h2>{img("rewards")}{reward_table}
{img("learnability_quality")}
<h2>Router against the oracle</h2>
<p>{len(art.heldout)} held-out calibration prompts the router never trained on; every
teacher answered them, so the oracle's choice is known.</p>
{img("router")}{agreement}{img("router_training")}
<h2>Generations and cost against Generate then Select</h2>{img("generations")}{cost_table}
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
"""


def render_html(art: ReportData, images: dict[str, bytes]) -> str:
    cfg = art.cfg
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>persyn report: {_e(cfg.name)}</title>
<style>{_CSS}</style></head>
<body>
<h1>persyn report: {_e(cfg.name)}</h1>
<p class="muted">run directory {_e(art.run_dir)}; student {_e(cfg.student.model)};
alpha {_e(cfg.rewards.alpha)}, {_e(cfg.rewards.normalization)} normalisation; written
{_e(created)}</p>
<div class="cards">{_headline(art)}</div>
{_sections(art, images)}
</body></html>
"""


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write `report.html` and one PNG per plot into `out_dir` (default RUN_DIR/report)."""
    art = load_artifacts(Path(run_dir))
    out = Path(out_dir) if out_dir is not None else RunArtifacts(art.run_dir).report_dir()
    out.mkdir(parents=True, exist_ok=True)
    images = {key: plot(art) for key, (_title, plot) in PLOTS.items()}
    for key, png in images.items():
        (out / f"{key}.png").write_bytes(png)
    page = out / "report.html"
    atomic_write_text(page, render_html(art, images))
    return page

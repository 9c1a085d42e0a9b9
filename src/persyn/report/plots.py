"""The report's plots: matplotlib figures rendered to PNG bytes, no display needed."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from persyn.report.data import ReportData


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


def learnability_measure(art: ReportData) -> str:
    """What the learnability axis measures: the configured signal (`rewards.learnability`)."""
    name = art.cfg.rewards.learnability.name
    return "mean token log-prob" if name == "mean_logprob" else name.replace("_", " ")


def plot_reward_distributions(art: ReportData) -> bytes:
    """Box plots per teacher of raw learnability, raw quality and the combined reward."""
    panels = [
        ("learnability", f"learnability ({learnability_measure(art)})"),
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
    ax.set_xlabel(f"learnability (student's {learnability_measure(art)})")
    ax.set_ylabel("quality (jittered)")
    ax.set_title("Learnability against quality (star: teacher mean)")
    ax.legend(fontsize="small")
    return _png(fig)


def confusion_matrix(art: ReportData) -> np.ndarray:
    """Counts [oracle teacher, router teacher] over the test calibration prompts."""
    index = {t: i for i, t in enumerate(art.teachers)}
    counts = np.zeros((len(art.teachers), len(art.teachers)), dtype=int)
    for row in art.heldout:
        if row["oracle"] is not None:
            counts[index[row["oracle"]], index[row["router"]]] += 1
    return counts


def plot_router(art: ReportData) -> bytes:
    """Confusion matrix against the oracle, and mean test-split reward of each policy."""
    counts = confusion_matrix(art)
    held = art.router_metrics.get("test", {})
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
    ax.set_title(f"Test prompts: {counts.sum()}, same teacher: {np.trace(counts)}")
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
    ax.set_title("Test calibration prompts")
    return _png(fig)


def plot_router_training(art: ReportData) -> bytes:
    history = art.router_metrics.get("history", [])
    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation (picks the epoch)")
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

    Generate then Select has every teacher answer every prompt; its tokens and cost are
    estimated from each teacher's mean completion tokens and cost per response in this run.
    """
    s = art.summary
    n_prompts, n_cal = s["prompts"], s["calibration_prompts"]
    routed = {t: sum(r["teacher"] == t for r in art.routes) for t in art.teachers}
    out: dict[str, dict[str, float]] = {}
    for t in art.teachers:
        used = n_cal + routed[t]
        tokens = s["completion_tokens"][t]
        gts_tokens = tokens / used * n_prompts if used else 0.0
        gts_cost = s["cost"][t] / used * n_prompts if used else 0.0
        out[t] = {
            "generations": used,
            "gts_generations": n_prompts,
            "tokens": tokens,
            "gts_tokens": gts_tokens,
            "cost": s["cost"][t],
            "gts_cost": gts_cost,
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
                "no prices set\n(teachers' cost_per_1k_*_tokens = 0)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_title(title, fontsize="medium")
        if k == 0:
            ax.legend(fontsize="small")
    return _png(fig)


def plot_novelty(art: ReportData) -> bytes:
    """Routed prompts' novelty against the held-out calibration prompts' own, with the
    threshold above which a routed prompt counts as novel."""
    fig = _figure(7, 3.6)
    ax = fig.add_subplot()
    routed = [r["novelty"] for r in art.routes if r.get("novelty") is not None]
    heldout = [] if art.heldout_novelty is None else list(art.heldout_novelty)
    if routed or heldout:
        bins = np.histogram_bin_edges(routed + heldout, bins=30)
        for values, label in ((heldout, "held-out calibration"), (routed, "routed")):
            if values:
                weights = np.full(len(values), 1 / len(values))
                ax.hist(values, bins=bins, weights=weights, alpha=0.55, label=label)
        threshold = art.summary.get("novelty_threshold")
        if threshold is not None:
            ax.axvline(threshold, color="k", linestyle="--", label="threshold")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no novelty: the router has no encoder space", ha="center")
    ax.set_xlabel("novelty (mean cosine distance to the nearest calibration prompts)")
    ax.set_ylabel("share of prompts")
    return _png(fig)


def plot_students(comparison: dict[str, Any]) -> bytes:
    """A run with several students (`persyn.report.students.compare_students`): shares of
    routed prompts per teacher per student (bars), and their routers' agreement matrix."""
    names, teachers = comparison["students"], comparison["teachers"]
    fig = _figure(4 + 1.6 * len(names), 3.6)
    bars, heat = fig.subplots(1, 2, width_ratios=[1.4, 1])
    colors, width = _colors(teachers), 0.8 / max(len(teachers), 1)
    for i, t in enumerate(teachers):
        xs = [j + i * width for j in range(len(names))]
        shares = [comparison["shares"][n][t] for n in names]
        bars.bar(xs, shares, width, label=t, color=colors[t])
    bars.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    bars.set_ylabel("share of routed prompts")
    # above the bars, which may reach the top
    bars.legend(fontsize="small", ncols=2, loc="lower left", bbox_to_anchor=(0, 1))
    matrix = [[comparison["agreement"][a][b] for b in names] for a in names]
    image = heat.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    heat.set_xticks(range(len(names)), names)
    heat.set_yticks(range(len(names)), names)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            color = "black" if value > 0.6 else "white"  # readable on viridis' yellow end
            heat.text(j, i, f"{value:.0%}", ha="center", va="center", color=color)
    heat.set_title("same teacher chosen")
    fig.colorbar(image, ax=heat)
    return _png(fig)


PLOTS = {
    "shares": ("Share of prompts per teacher", plot_shares),
    "rewards": ("Reward distributions per teacher", plot_reward_distributions),
    "learnability_quality": ("Learnability against quality", plot_learnability_quality),
    "router": ("Router against the oracle", plot_router),
    "router_training": ("Router training", plot_router_training),
    "generations": ("Generations and cost", plot_generations),
    "novelty": ("Novelty of routed prompts", plot_novelty),
}

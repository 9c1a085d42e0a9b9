"""The headline a finished `persyn run` or `persyn demo` prints: teacher shares, the
router against the best single teacher (with a verdict the test split can support),
generations and failures."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# Below this many test prompts the margin's interval is too wide to call a winner.
MIN_TEST_PROMPTS = 20


def router_verdict(held: dict[str, Any]) -> str:
    """One line on the router against the best single teacher, no stronger than the
    router's test split supports: too few prompts, matching the oracle, beating or not
    beating the best single teacher (by the 95% interval of the mean margin), or too
    close to call."""
    n = int(held["prompts"])
    interval = ""
    if "margin_low" in held:  # runs trained before persyn measured the margin have none
        interval = (
            f" (margin over it {held['margin']:+.3f}, 95% interval "
            f"[{held['margin_low']:+.3f}, {held['margin_high']:+.3f}], n={n})"
        )
    matches_oracle = held["reward"] >= held["oracle_reward"]
    if n < MIN_TEST_PROMPTS:
        return (
            f"router: {n} test prompts are too few to judge it against the best single "
            f"teacher{interval}"
            + ("; it matches the oracle on them" if matches_oracle else "")
            + f". More calibration prompts (calibration.size) give at least {MIN_TEST_PROMPTS}"
        )
    if matches_oracle:
        return f"router matches the oracle on its {n} test prompts{interval}"
    low = held.get("margin_low", held["reward"] - held["best_fixed_reward"])
    high = held.get("margin_high", held["reward"] - held["best_fixed_reward"])
    if low > 0:
        return f"router beats the best single teacher{interval}"
    if high < 0:
        return f"router does not beat the best single teacher{interval}"
    return f"router and the best single teacher are too close to call{interval}"


def print_summary(summary: dict[str, Any], run_dir: str, console: Console) -> None:
    """The headline numbers: oracle shares, router vs best single teacher, generations."""
    table = Table(title="teachers", title_justify="left")
    for col in ("teacher", "oracle share (calibration)", "router share (routed)", "dataset share"):
        table.add_column(col, justify="right" if col != "teacher" else "left")
    for t in summary["oracle_share"]:
        table.add_row(
            t,
            f"{summary['oracle_share'][t]:.0%}",
            f"{summary['router_share'][t]:.0%}",
            f"{summary['dataset_share'][t]:.0%}",
        )
    console.print(table)
    held = summary.get("router_test")
    if held and held["prompts"]:
        console.print(
            f"router on its test split, {int(held['prompts'])} calibration prompts used neither "
            f"to train it nor to pick its epoch: top-1 agreement with the oracle "
            f"{held['top1']:.0%}, pairwise accuracy {held['pairwise_accuracy']:.0%}\n"
            f"  mean combined reward: router {held['reward']:.3f} | best single teacher on "
            f"these prompts ({held['best_fixed_teacher_name']}) {held['best_fixed_reward']:.3f}"
            f" | random {held['random_reward']:.3f} | oracle {held['oracle_reward']:.3f}"
        )
        console.print(f"  {router_verdict(held)}", highlight=False)
    top = max(summary["oracle_share"], key=summary["oracle_share"].get)
    console.print(
        f"most frequent oracle teacher: {top} with {summary['oracle_share'][top]:.0%} of "
        f"{summary['calibration_prompts']} calibration prompts"
    )
    spend = summary.get("spend")
    if spend and (spend["total"]["cost"] or spend["max_cost"] is not None):
        cap = "" if spend["max_cost"] is None else f" of max_cost {spend['max_cost']:g}"
        console.print(
            f"spent {spend['total']['cost']:.4f}{cap} on {spend['total']['requests']} teacher "
            "and judge requests (per teacher and stage: summary.json's spend, the report)"
        )
    imported = summary.get("imported_responses")
    failed_answers = summary.get("failed_answers", 0)
    console.print(
        f"generations: {summary['generations']} used vs "
        f"{summary['generate_then_select_generations']} for Generate-then-Select "
        f"({summary['generation_ratio']:.0%})"
        + (f", {imported} calibration answers imported" if imported else "")
        + (
            f", {stored} of them read from the answer store (asked by an earlier run)"
            if (stored := summary.get("answers_from_store"))
            else ""
        )
        + f"; dataset rows {summary['dataset_rows']}, "
        f"failed {summary['failed_rows']}"
        + (
            f", {summary['fallback_rows']} answered by a fallback teacher"
            if summary.get("fallback_rows")
            else ""
        )
        + _cut(summary.get("truncated_answers") or {}, summary.get("keeps_truncated") or [])
        + (
            f"; {failed_answers} teacher answers failed (within max_error_rate; "
            "persyn inspect RUN_DIR lists them, a rerun retries them)"
            if failed_answers
            else ""
        )
        + f"\nartifacts in {run_dir} (dataset.jsonl, dataset/, summary.json)"
    )


def _cut(truncated: dict[str, int], kept: list[str]) -> str:
    """The answers cut at max_new_tokens, per teacher: failed answers, except those of
    the teachers that keep them (`generation.keep_truncated`)."""
    failed = {t: n for t, n in truncated.items() if n and t not in kept}
    kept_cut = {t: n for t, n in truncated.items() if n and t in kept}
    parts = []
    for what, cut in (("failed", failed), ("kept (generation.keep_truncated)", kept_cut)):
        if cut:
            who = ", ".join(f"{t} {n}" for t, n in cut.items())
            parts.append(f"{sum(cut.values())} cut at max_new_tokens and {what} ({who})")
    return "; answers " + "; ".join(parts) if parts else ""

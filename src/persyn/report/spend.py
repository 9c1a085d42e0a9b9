"""The spend table of the report and the dataset card: requests, tokens and money per
teacher and judge per stage, from `summary.json`'s `spend` (`persyn.spend.ledger`)."""

from __future__ import annotations

from typing import Any

HEADERS = ["who", "stage", "requests", "prompt tokens", "completion tokens", "cost"]


def spend_table(summary: dict[str, Any]) -> list[list[str]] | None:
    """One row of `HEADERS` per teacher (or judge) and stage, then one per stage and the
    total; None for a summary written before persyn kept the ledger."""
    spend = summary.get("spend")
    if spend is None:
        return None
    rows = [
        _row(
            f"{line['who']}" + (" (judge)" if line["role"] == "judge" else ""), line["stage"], line
        )
        for line in spend["lines"]
    ]
    rows += [_row("all", stage, s) for stage, s in spend["by_stage"].items() if s["requests"]]
    rows.append(_row("all", "total", spend["total"]))
    return rows


def spend_line(summary: dict[str, Any]) -> str:
    """The total and the cap in words."""
    spend = summary.get("spend")
    if spend is None:
        return "Not recorded (a run exported before persyn kept a ledger)."
    cap = spend["max_cost"]
    capped = "no spend cap (max_cost)" if cap is None else f"spend cap (max_cost) {cap:g}"
    return (
        f"Spent {spend['total']['cost']:.4f} on {spend['total']['requests']} requests; "
        f"{capped}. Prices are the config's cost_per_1k_*_tokens; backends that count no "
        "prompt tokens record 0, function teachers count words as tokens."
    )


def _row(who: str, stage: str, s: dict[str, Any]) -> list[str]:
    return [
        who,
        stage,
        str(s["requests"]),
        str(s["prompt_tokens"]),
        str(s["completion_tokens"]),
        f"{s['cost']:.4f}",
    ]

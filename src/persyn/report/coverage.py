"""How well the calibration set covers the routed prompts, from `routes.jsonl`'s `novelty`
and `confidence` (`persyn.method.coverage`): for `summary.json`, `persyn inspect` (the
route stage's stats) and the report."""

from __future__ import annotations

from typing import Any

import numpy as np

CONFIDENCE_QUANTILES = (0.1, 0.5, 0.9)


def coverage_summary(routes: list[dict[str, Any]], threshold: float | None) -> dict[str, Any]:
    """`novelty_threshold`; `share_novel`, the share of routed prompts with a novelty above
    it (None: no novelty, e.g. a router without an encoder space); `confidence_quantiles`
    {"p10", "p50", "p90"} of the router's confidence (None without routed prompts);
    `share_uncovered`, the share the route stage found uncovered (`routing.uncovered`:
    novel, or less confident than `routing.uncovered_confidence`)."""
    novelty = np.array([r.get("novelty") for r in routes if r.get("novelty") is not None])
    sure = np.array([r["confidence"] for r in routes if r.get("confidence") is not None])
    share = None
    if threshold is not None and len(novelty):
        share = round(float(np.mean(novelty > threshold)), 5)
    quantiles = None
    if len(sure):
        quantiles = {
            f"p{round(q * 100)}": round(float(np.quantile(sure, q)), 5)
            for q in CONFIDENCE_QUANTILES
        }
    flags = [r["uncovered"] for r in routes if "uncovered" in r]  # routed before: none
    return {
        "novelty_threshold": threshold,
        "share_novel": share,
        "share_uncovered": round(float(np.mean(flags)), 5) if flags else None,
        "confidence_quantiles": quantiles,
    }


def most_novel(routes: list[dict[str, Any]], n: int = 10) -> list[dict[str, Any]]:
    """The `n` routes rows with the highest novelty, most novel first."""
    scored = [r for r in routes if r.get("novelty") is not None]
    return sorted(scored, key=lambda r: -r["novelty"])[:n]

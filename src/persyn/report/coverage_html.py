"""The report's coverage section: novel routed prompts (`novelty`, `confidence`) and what
`routing.uncovered` did with the uncovered ones, active calibration's rounds included."""

from __future__ import annotations

from typing import Any

from persyn.report.coverage import most_novel
from persyn.report.data import ReportData
from persyn.report.html_parts import excerpt, fmt_num, html_table


def novelty_html(art: ReportData) -> str:
    """The share of novel routed prompts and the most novel ones with their teacher."""
    policy = uncovered_html(art.summary)
    share = art.summary.get("share_novel")
    if share is None:
        return "<p>No novelty: the router has no encoder space.</p>" + policy
    rows = [
        [
            excerpt(art.prompts[r["prompt_id"]]["messages"][-1]["content"]),
            r["teacher"],
            fmt_num(r["novelty"]),
            fmt_num(r.get("confidence")),
        ]
        for r in most_novel(art.routes)
    ]
    return (
        f"<p>{share:.1%} of routed prompts are novel: their novelty is above "
        f"{fmt_num(art.summary.get('novelty_threshold'))}, which held-out calibration prompts "
        f"stay below with probability {art.cfg.router.novelty_quantile:g}. The router's "
        "choice is least certain there; the most novel:</p>"
        + html_table(["prompt", "teacher", "novelty", "confidence"], rows)
        + policy
    )


def uncovered_html(summary: dict[str, Any]) -> str:
    """What `routing.uncovered` did with the uncovered prompts; active calibration's
    rounds."""
    share, policy = summary.get("share_uncovered"), summary.get("uncovered_policy", "route")
    if share is None:
        return ""
    what = {
        "route": "routed like any other",
        "fallback": f"sent to {summary.get('uncovered_teacher')!r}",
        "calibrate": "routed after active calibration",
    }[policy]
    out = (
        f"<p>{share:.1%} of routed prompts are uncovered (routing.uncovered: {policy}): {what}.</p>"
    )
    rounds = summary.get("active_calibration") or []
    if rounds:
        rows = [
            [
                r["round"],
                len(r["added"]),
                r["generations"],
                f"{r['uncovered_before']:.1%}",
                f"{r['uncovered_after']:.1%}",
                r["routes_changed"],
                fmt_num(r.get("vote_width"), "{:g}"),
            ]
            for r in rounds
        ]
        headers = ["round", "prompts added", "generations", "uncovered before", "after"]
        out += html_table([*headers, "routes changed", "neighbour vote width"], rows)
    return out

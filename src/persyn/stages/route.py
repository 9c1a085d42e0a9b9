"""route: one teacher per remaining prompt, the routing policy over the router's scores
(argmax by default; sampling, or an assignment under a budget: `routing` in the config).

Prompts the calibration set does not cover (`persyn.method.uncovered`) follow
`routing.uncovered`: `route` routes them as any other, `fallback` sends them to a safe
teacher, `calibrate` first calibrates the most uncovered ones (`persyn.stages.active`),
which then leave the routed prompts, and routes the rest with the retrained router."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.method import failure_reward
from persyn.progress import log
from persyn.report.coverage import coverage_summary
from persyn.router.metrics import best_fixed_teacher
from persyn.stages.active import calibrate_uncovered
from persyn.stages.common import StageError, routable_columns
from persyn.stages.routing import Routing, route_prompts

if TYPE_CHECKING:
    from persyn.run import Run


def route(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    # The fingerprint the trained router was finished under (the pipeline runs `route` only
    # after `train-router` is done for this config).
    router_fp = run.store.marker("train-router")["fingerprint"]  # type: ignore[index]
    checkpoint = run.store.router_checkpoint()
    if _embeds(checkpoint.meta()["router"]) and checkpoint.novelty() is None:
        raise StageError(
            f"route: {checkpoint.novelty_path} is missing (a router trained by an earlier "
            "persyn): rerun `persyn train-router CONFIG`, which stores the calibration "
            "prompts' embeddings that routed prompts' novelty is measured against"
        )
    active: list[dict[str, Any]] | None = None
    if cfg.routing.uncovered == "calibrate":
        routing, active = calibrate_uncovered(run, router_fp)
    else:
        run.store.active().clear()
        routing = route_prompts(run, run.store.split().routed, run.store.router_dir(), router_fp)
    names = cfg.teacher_names
    choice = routing.choice
    safe = None
    if cfg.routing.uncovered == "fallback":
        safe = safe_teacher(run)
        choice = np.where(routing.uncovered, names.index(safe), choice)
    rows = route_rows(run, routing, choice)
    run.store.write_routes(rows)
    shares = {n: sum(r["teacher"] == n for r in rows) for n in names}
    coverage = coverage_summary(rows, routing.threshold)
    log(f"route ({cfg.routing.kind}): {len(rows)} prompts -> {shares}")
    if coverage["share_novel"] is not None:
        log(
            f"route: {coverage['share_novel']:.1%} of routed prompts are novel (novelty above "
            f"{coverage['novelty_threshold']:.3f}, the held-out calibration prompts' "
            f"{cfg.router.novelty_quantile:.0%} quantile)"
        )
    if safe is not None:
        log(f"route: {int(routing.uncovered.sum())} uncovered prompts go to {safe!r} (fallback)")
    if cfg.routing.kind != "argmax":
        report = routing.report
        log(
            f"route: expected cost {report['cost']:.4g} vs {report['argmax_cost']:.4g} for "
            f"argmax; expected reward (mean win probability) given up "
            f"{report['expected_reward_given_up']:.3f} per prompt"
        )
    stats: dict[str, Any] = {
        "routed": len(rows),
        "per_teacher": shares,
        "policy": routing.report,
        "share_novel": coverage["share_novel"],
        "uncovered": {
            "policy": cfg.routing.uncovered,
            "prompts": int(routing.uncovered.sum()),
            "share": coverage["share_uncovered"],
            "teacher": safe,
            "novelty_threshold": routing.threshold,
        },
    }
    if active is not None:
        stats["active"] = active
    return stats


def route_rows(run: Run, routing: Routing, choice: np.ndarray) -> list[dict[str, Any]]:
    """`routes.jsonl`'s rows: the teacher (`choice`), the key of the scores (they stay in
    the router score log, `RunArtifacts.routes`), novelty, confidence, whether the prompt
    is uncovered and, where `routing.uncovered` overrode it, the router's own teacher."""
    names = run.cfg.teacher_names
    rows = []
    for i, pid in enumerate(routing.ids):
        n = routing.novelty[i]
        row = {
            "prompt_id": pid,
            "teacher": names[int(choice[i])],
            "router_fp": routing.router_fp,
            "novelty": None if np.isnan(n) else round(float(n), 5),
            "confidence": round(float(routing.confidence[i]), 5),
            "uncovered": bool(routing.uncovered[i]),
        }
        if choice[i] != routing.choice[i]:
            row["router_teacher"] = names[int(routing.choice[i])]
        rows.append(row)
    return rows


def safe_teacher(run: Run) -> str:
    """`routing.uncovered_teacher`, else the teacher (that can generate) with the best mean
    reward on the calibration prompts, failed answers charged as in router training."""
    cfg = run.cfg
    named = cfg.routing.uncovered_teacher
    able = routable_columns(cfg)
    if named is not None:
        if cfg.teacher_names.index(named) not in able:
            raise StageError(
                f"routing.uncovered_teacher: {named!r} cannot generate (its answers are "
                "imported only): name a teacher that can answer new prompts"
            )
        return named
    rewards = run.store.rewards()
    charge = failure_reward(cfg.rewards.normalization, len(cfg.teachers))
    return cfg.teacher_names[best_fixed_teacher(rewards.routing_reward, charge, able)]


def _embeds(kind: str) -> bool:
    """Whether routers of `kind` have an encoder space (and so a novelty reference)."""
    from persyn.router.routers import ROUTERS  # the router classes, only when routing

    return ROUTERS.load(kind).embeds

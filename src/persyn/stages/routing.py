"""Routing a list of prompts with a saved router: its scores and novelty (logged, so a
killed stage resumes), the routing policy's choice, the router's confidence and which
prompts the calibration set does not cover. `route` routes the remaining prompts with it,
and active calibration (`persyn.stages.active`) each round's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import RouterCheckpoint
from persyn.method import confidence, uncovered
from persyn.policies import cost_per_prompt, make_policy, policy_report
from persyn.stages.common import routable_columns, teacher_fingerprint

if TYPE_CHECKING:
    from persyn.run import Run


@dataclass
class Routing:
    """The policy's teacher for each of `ids` and what the router said of it."""

    ids: list[str]
    router_fp: str  # the key of the scores in the router score log
    choice: np.ndarray  # [prompts] pool index of the policy's teacher
    scores: np.ndarray  # [prompts, teachers]
    novelty: np.ndarray  # [prompts] NaN: a router without an encoder space
    confidence: np.ndarray  # [prompts]
    uncovered: np.ndarray  # [prompts] bool (`persyn.method.uncovered`)
    threshold: float | None  # the router's novelty threshold
    report: dict[str, Any]  # the policy's expected cost and reward (`policy_report`)


def route_prompts(run: Run, ids: list[str], router_dir: Path, router_fp: str) -> Routing:
    """Route `ids` with the router saved in `router_dir` (scores logged under
    `router_fp`) by the config's policy."""
    cfg = run.cfg
    scores, novelty = router_scores(run, ids, router_fp, router_dir)
    names = cfg.teacher_names
    able, cost, local = policy_choice(run, ids, scores)
    # from the scores as `routes(with_scores=True)` gives them (5 decimals): a prompt
    # scored again in another batch (a resumed route) keeps its confidence
    sure = confidence(np.round(scores[:, able], 5))
    reference = RouterCheckpoint(router_dir).novelty()
    threshold = None if reference is None else reference.threshold
    return Routing(
        ids=ids,
        router_fp=router_fp,
        choice=np.array(able, dtype=int)[local],
        scores=scores,
        novelty=novelty,
        confidence=sure,
        uncovered=uncovered(novelty, threshold, sure, cfg.routing.uncovered_confidence),
        threshold=threshold,
        report=policy_report(scores[:, able], local, cost[able], [names[j] for j in able]),
    )


def policy_choice(
    run: Run, ids: list[str], scores: np.ndarray
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The config's routing policy on router `scores` [prompts, teachers] of `ids`: (the
    pool indices it chooses among, every teacher's cost per prompt, the chosen position
    in the first per prompt). A teacher known only from imported data cannot answer: the
    policy chooses among the others (all of them when none can; `generate` then says why
    that fails)."""
    cfg = run.cfg
    names = cfg.teacher_names
    cost = cost_per_prompt(cfg, mean_response_tokens(run), expected_prompt_tokens(run, ids))
    able = routable_columns(cfg)
    local = make_policy(cfg.routing, [names[j] for j in able], cost[able]).choose(scores[:, able])
    return able, cost, local


def router_scores(
    run: Run, ids: list[str], router_fp: str, router_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The scores [prompts, teachers] and novelty [prompts] (NaN: none) of the router saved
    in `router_dir` for `ids`, computed by the executor (in process, or Ray replicas
    holding the router) and appended chunk by chunk to the router score log under
    `router_fp`: a killed `route` resumes where it stopped. The policy needs every score
    (a budget is global), so it runs once they are all there. Rows logged before novelty
    was are scored again."""
    rowlog = run.store.router_score_log()
    by_id = run.prompts_by_id()
    todo = [pid for pid in ids if "novelty" not in (rowlog.get((pid, router_fp)) or {})]

    def sink(indices: list[int], scores: np.ndarray, novelty: np.ndarray) -> None:
        rowlog.append(
            {
                "prompt_id": todo[i],
                "fp": router_fp,
                "scores": [float(v) for v in row],
                "novelty": None if np.isnan(n) else float(n),
            }
            for i, row, n in zip(indices, scores, novelty, strict=True)
        )

    texts = [by_id[pid].text for pid in todo]
    run.executor.router_scores(router_dir, run.cfg.teacher_names, texts, sink)
    rows = [rowlog.get((pid, router_fp)) for pid in ids]
    scores = [r["scores"] for r in rows]  # type: ignore[index]
    novelty = [np.nan if r["novelty"] is None else r["novelty"] for r in rows]  # type: ignore[index]
    return (
        np.array(scores, dtype=float).reshape(len(ids), len(run.cfg.teachers)),
        np.array(novelty, dtype=float),
    )


# Characters per token where no count was recorded: the usual rule of thumb for English
# text under BPE tokenizers (code and other languages run fewer characters per token).
CHARS_PER_TOKEN = 4


def expected_prompt_tokens(run: Run, ids: list[str]) -> dict[str, float]:
    """Expected prompt tokens per teacher for the prompts `ids`: the mean of the counts its
    calibration answers recorded (the server's own count: chat template and system prompt
    included), else, for a backend that records none (scripted, imported answers), its
    system prompt and the prompts' mean length at `CHARS_PER_TOKEN`, the teacher's
    tokenizer not being loaded."""
    calibration = run.store.split().calibration
    by_id = run.prompts_by_id()
    chars = float(np.mean([len(by_id[pid].text) for pid in ids])) if ids else 0.0
    out = {}
    for t in run.cfg.teachers:
        rowlog, fp = run.store.generation_log(t.name), teacher_fingerprint(t)
        rows = [rowlog.get((pid, fp)) for pid in calibration]
        counted = [
            r["prompt_tokens"]
            for r in rows
            if r is not None and r["error"] is None and r.get("prompt_tokens", 0) > 0
        ]
        system = len(t.system_prompt or "")
        out[t.name] = float(np.mean(counted)) if counted else (system + chars) / CHARS_PER_TOKEN
    return out


def mean_response_tokens(run: Run) -> dict[str, float]:
    """Mean completion tokens of each teacher's calibration responses (for expected costs)."""
    ids = run.store.split().calibration
    means = {}
    for t in run.cfg.teachers:
        rowlog, fp = run.store.generation_log(t.name), teacher_fingerprint(t)
        rows = [rowlog.get((pid, fp)) for pid in ids]
        tokens = [r["completion_tokens"] for r in rows if r is not None and r["error"] is None]
        if tokens:
            means[t.name] = float(np.mean(tokens))
    return means

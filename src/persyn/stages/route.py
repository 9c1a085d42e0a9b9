"""route: one teacher per remaining prompt, the routing policy over the router's scores
(argmax by default; sampling, or an assignment under a budget: `routing` in the config)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.method import confidence
from persyn.policies import cost_per_prompt, make_policy, policy_report
from persyn.progress import log
from persyn.report.coverage import coverage_summary
from persyn.stages.common import StageError, generating_columns, teacher_fingerprint

if TYPE_CHECKING:
    from persyn.run import Run


def route(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    ids = run.store.split().routed
    # The fingerprint the trained router was finished under (the pipeline runs `route` only
    # after `train-router` is done for this config).
    router_fp = run.store.marker("train-router")["fingerprint"]  # type: ignore[index]
    checkpoint = run.store.router_checkpoint()
    reference = checkpoint.novelty()
    if _embeds(checkpoint.meta()["router"]) and reference is None:
        raise StageError(
            f"route: {checkpoint.novelty_path} is missing (a router trained by an earlier "
            "persyn): rerun `persyn train-router CONFIG`, which stores the calibration "
            "prompts' embeddings that routed prompts' novelty is measured against"
        )
    scores, novelty = router_scores(run, ids, router_fp)
    names = cfg.teacher_names
    cost = cost_per_prompt(cfg, mean_response_tokens(run), expected_prompt_tokens(run, ids))
    # A teacher known only from imported data cannot answer: the policy chooses among the
    # others (all of them when none can; `generate` then says why that fails).
    able = generating_columns(cfg) or list(range(len(names)))
    local = make_policy(cfg.routing, [names[j] for j in able], cost[able]).choose(scores[:, able])
    choice = np.array(able, dtype=int)[local]
    # from the scores as `routes(with_scores=True)` gives them (5 decimals): a prompt
    # scored again in another batch (a resumed route) keeps its confidence
    sure = confidence(np.round(scores[:, able], 5))
    rows = [
        # the scores themselves stay in the router score log (`RunArtifacts.routes`)
        {
            "prompt_id": pid,
            "teacher": names[int(c)],
            "router_fp": router_fp,
            "novelty": None if np.isnan(n) else round(float(n), 5),
            "confidence": round(float(p), 5),
        }
        for pid, c, n, p in zip(ids, choice, novelty, sure, strict=True)
    ]
    run.store.write_routes(rows)
    shares = {n: sum(r["teacher"] == n for r in rows) for n in names}
    report = policy_report(scores[:, able], local, cost[able], [names[j] for j in able])
    coverage = coverage_summary(rows, None if reference is None else reference.threshold)
    log(f"route ({cfg.routing.kind}): {len(rows)} prompts -> {shares}")
    if coverage["share_novel"] is not None:
        log(
            f"route: {coverage['share_novel']:.1%} of routed prompts are novel (novelty above "
            f"{coverage['novelty_threshold']:.3f}, the held-out calibration prompts' "
            f"{cfg.router.novelty_quantile:.0%} quantile)"
        )
    if cfg.routing.kind != "argmax":
        log(
            f"route: expected cost {report['cost']:.4g} vs {report['argmax_cost']:.4g} for "
            f"argmax; expected reward (mean win probability) given up "
            f"{report['expected_reward_given_up']:.3f} per prompt"
        )
    return {
        "routed": len(rows),
        "per_teacher": shares,
        "policy": report,
        "share_novel": coverage["share_novel"],
    }


def _embeds(kind: str) -> bool:
    """Whether routers of `kind` have an encoder space (and so a novelty reference)."""
    from persyn.router.routers import ROUTERS  # the router classes, only when routing

    return ROUTERS.load(kind).embeds


def router_scores(run: Run, ids: list[str], router_fp: str) -> tuple[np.ndarray, np.ndarray]:
    """The router's scores [prompts, teachers] and novelty [prompts] (NaN: none) for `ids`,
    computed by the executor (in process, or Ray replicas holding the router) and appended
    chunk by chunk to the router score log under the trained router's fingerprint: a
    killed `route` resumes where it stopped. The policy needs every score (a budget is
    global), so it runs once they are all there. Rows logged before novelty was are
    scored again."""
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
    run.executor.router_scores(run.store.router_dir(), run.cfg.teacher_names, texts, sink)
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

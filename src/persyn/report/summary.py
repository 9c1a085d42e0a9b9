"""`summary.json`: counts, shares, costs and the headline numbers the demo prints."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from persyn.artifacts import RewardTable
from persyn.report.coverage import coverage_summary
from persyn.spend import ledger
from persyn.store import RowLog

if TYPE_CHECKING:
    from persyn.run import Run


def build_summary(
    run: Run,
    rewards: RewardTable,
    teacher_rows: Counter[str],
    failed: list[dict[str, Any]],
    logs: dict[str, RowLog],
    fps: dict[str, str],
    asked: dict[str, list[str]],
) -> dict[str, Any]:
    """`rewards`: the calibration prompts' (active calibration's added included);
    `asked`: per routed prompt, the teachers of its fallback chain that answered it (the
    routed teacher first), each answer paid for."""
    cfg = run.cfg
    names = cfg.teacher_names
    n_prompts = len(run.prompts)
    routes = run.store.routes()
    used = dict.fromkeys(names, 0)
    tokens = dict.fromkeys(names, 0)
    prompt_tokens = dict.fromkeys(names, 0)
    wanted = {(pid, t) for pid in rewards.ids for t in names}
    wanted |= {(pid, t) for pid, teachers in asked.items() for t in teachers}
    failed_ids = {f["prompt_id"] for f in failed}
    imported = dict.fromkeys(names, 0)
    # answers whose finish reason is known, and those of them cut at max_new_tokens
    finished = dict.fromkeys(names, 0)
    cut = dict.fromkeys(names, 0)
    # Answers that failed even when the stage went on (within max_error_rate): a failed
    # calibration answer leaves no dataset row missing, yet the user should see it.
    failed_answers = dict.fromkeys(names, 0)
    for pid, t in wanted:
        g = logs[t].get((pid, fps[t]))
        if g is not None and g.get("error"):
            failed_answers[t] += 1
        if g is not None and g.get("provenance") == "imported":
            imported[t] += 1  # read from calibration.source: no generation, no cost
        elif g is not None:
            used[t] += 1
            tokens[t] += g["completion_tokens"]
            prompt_tokens[t] += g.get("prompt_tokens", 0)
            if g["error"] is None and g.get("finish_reason") is not None:
                finished[t] += 1
                cut[t] += bool(g["truncated"])
    # Each kind of token at its own price (backends that count no prompt tokens record 0).
    cost = {
        t.name: (
            prompt_tokens[t.name] * t.cost_per_1k_input_tokens
            + tokens[t.name] * t.cost_per_1k_output_tokens
        )
        / 1000
        for t in cfg.teachers
    }
    oracle = rewards.oracle
    router_metrics = (run.store.marker("train-router") or {}).get("metrics", {})
    # The test split: calibration prompts that neither trained the router nor picked its
    # epoch (the validation split did that).
    test = router_metrics.get("test")
    if test is not None and test["prompts"]:
        test = {**test, "best_fixed_teacher_name": names[int(test["best_fixed_teacher"])]}
    generations = sum(used.values())
    # per teacher {"scored", "truncated"}: calibration answers longer than the student
    # reads (None: scored before persyn counted them)
    too_long = (run.store.marker("score") or {}).get("student_truncation")
    student_truncated = student_share = None
    if too_long is not None:
        student_truncated = {t: c["truncated"] for t, c in too_long.items()}
        student_share = {t: _share(c["truncated"], c["scored"]) for t, c in too_long.items()}
    gts = n_prompts * len(names)
    reference = run.store.router_checkpoint().novelty() if routes else None
    tuned = run.store.tune_choice()
    if tuned is not None:  # `persyn tune` ran; the run used its choice, or kept its alpha
        used = (tuned["alpha"], tuned["learnability"])
        tuned["used"] = used == (cfg.rewards.alpha, cfg.rewards.learnability.name)
    threshold = None if reference is None else reference.threshold
    route_stats = run.store.marker("route") or {}
    uncovered = route_stats.get("uncovered", {})
    # active calibration routes with its last round's router, and that router's threshold
    threshold = uncovered.get("novelty_threshold", threshold)
    return {
        "run": cfg.name,
        "alpha": cfg.rewards.alpha,
        "tune": tuned,
        "prompts": n_prompts,
        "calibration_prompts": len(rewards.ids),
        "routed_prompts": len(routes),
        "dataset_rows": teacher_rows.total(),
        "failed_rows": len(failed),
        "failed_reasons": dict(Counter(f["error"] for f in failed)),
        # rows answered by a fallback teacher after the routed teacher's answer failed
        "fallback_rows": sum(
            len(teachers) > 1 and pid not in failed_ids for pid, teachers in asked.items()
        ),
        "failed_answers": sum(failed_answers.values()),
        "failed_answers_by_teacher": failed_answers,
        "dataset_share": {t: teacher_rows[t] / max(teacher_rows.total(), 1) for t in names},
        "oracle_share": {t: oracle.count(t) / max(len(oracle), 1) for t in names},
        "router_share": {
            t: sum(r["teacher"] == t for r in routes) / max(len(routes), 1) for t in names
        },
        "router_test": test,
        # how well the calibration prompts cover the routed ones (`novelty`, `confidence`)
        **coverage_summary(routes, threshold),
        # `routing.uncovered` and, for `calibrate`, what each round added and changed
        "uncovered_policy": uncovered.get("policy", "route"),
        "uncovered_teacher": uncovered.get("teacher"),
        "active_calibration": route_stats.get("active"),
        # answers cut at max_new_tokens (failed unless the teacher's keep_truncated), and
        # their share of the answers whose finish reason is known (None: none known)
        "truncated_answers": cut,
        "truncation_share": {t: _share(cut[t], finished[t]) for t in names},
        "keeps_truncated": [t.name for t in cfg.teachers if t.generation.keep_truncated],
        # calibration answers that did not fit in student.max_length, and their share
        "student_truncated": student_truncated,
        "student_truncation_share": student_share,
        # which calibration prompts and answers each quality signal scored (`score`)
        "quality_coverage": (run.store.marker("score") or {}).get("quality_coverage"),
        "generations": generations,
        "imported_responses": sum(imported.values()),
        # of `generations`, those read from the answer store (an earlier run paid for them)
        "answers_from_store": sum(
            t.get("from_store", 0)
            for stage in ("calibrate", "generate")
            for t in ((run.store.marker(stage) or {}).get("teachers") or {}).values()
        ),
        "generate_then_select_generations": gts,
        "generation_ratio": generations / gts if gts else None,
        "completion_tokens": tokens,
        "prompt_tokens": prompt_tokens,
        "cost": cost,
        "total_cost": sum(cost.values()),
        # every paid request in the logs, per teacher and judge per stage (`persyn.spend`)
        "spend": ledger(run, asked),
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None

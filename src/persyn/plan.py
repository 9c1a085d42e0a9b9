"""`persyn plan CONFIG`: what a run will cost before it runs, Route then Generate against
Generate then Select (every teacher answers every prompt).

Per teacher: the expected prompt and completion tokens of one answer, its money at the
teacher's prices, and, where answers were timed, its seconds. Completion tokens come from
`routing.expected_tokens`, else from answers measured in the run directory (a `--pilot`,
or an earlier run's calibration answers), else `max_new_tokens`, a bound. By default no
model is called; `pilot` asks each teacher that many calibration prompts through
`ask_teacher`, so those answers are cached, counted by the spend cap and reused by the
run. Which teacher a routed prompt goes to is unknown before a router exists: the routed
share is a bound (every routed prompt answered once, by the cheapest or the costliest
teacher) unless the run directory has routes already. Under `rewards.alpha: auto` the
tune's pilot students are planned too (`persyn.eval.tune_report.tune_plan`). Every figure
is an estimate.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from persyn.artifacts import RunArtifacts
from persyn.config import ConfigError, RunConfig, TeacherConfig
from persyn.data import load_prompts
from persyn.eval.tune_report import tune_plan
from persyn.pipeline import run_stage
from persyn.run import Run, working_in
from persyn.spend import Price, spent
from persyn.stages.common import ask_teacher, generating_teachers, teacher_fingerprint
from persyn.stages.routing import CHARS_PER_TOKEN
from persyn.teachers.base import Prompt

#: the figures summed over teachers, for one plan or bound
FIGURES = ("generations", "prompt_tokens", "completion_tokens", "cost", "wall_s")


def plan(
    cfg: RunConfig, pilot: int = 0, run_dir: str | None = None, replace: bool = False
) -> dict[str, Any]:
    """The estimates as plain data (what `persyn plan` prints and writes as JSON)."""
    store = RunArtifacts(run_dir or cfg.run_dir)
    timing: dict[str, float | None] = {}
    notes = [
        "estimates: completion tokens from routing.expected_tokens, measured answers or "
        "max_new_tokens (a bound), prompt tokens measured or at "
        f"{CHARS_PER_TOKEN} characters a token; fallback answers to failed routed answers "
        "are not included"
    ]
    if pilot:
        run = Run.open(cfg, run_dir)
        with working_in(run, replace):
            run_stage(run, "prepare")
            timing = _pilot(run, pilot)
        notes.append(
            f"pilot: {pilot} calibration prompts per teacher, answered and cached for the run; "
            "seconds per answer include loading the teacher"
        )
    prompts, calibration, n_cal, n_routed = _prompts(cfg, store)
    if cfg.calibration.source is not None:
        notes.append(
            "calibration.source: its answers are imported at no cost; counted here as if "
            "generated (an upper bound)"
        )
    able = [cfg.teacher(name) for name in generating_teachers(cfg)]
    if not able:
        raise ConfigError("teachers: none can generate (all imported): nothing to plan")
    teachers = {t.name: _per_answer(cfg, store, t, prompts, calibration, timing) for t in able}
    everything = {t: float(len(prompts)) for t in teachers}
    routed_shares = _routed_shares(store, teachers)
    rtg_calibration = _sum(teachers, dict.fromkeys(teachers, float(n_cal)))
    if routed_shares is not None:
        counts = {t: n_routed * share for t, share in routed_shares.items()}
        low = high = _sum(teachers, counts)
        notes.append(f"routed shares: from the routes in {store.root}")
    else:
        cheapest, costliest = _extremes(teachers)
        low = _sum(teachers, {cheapest: float(n_routed)})
        high = _sum(teachers, {costliest: float(n_routed)})
        notes.append(
            "routed shares: unknown before a router exists; bounds: every routed prompt "
            f"answered once, by the cheapest teacher ({cheapest}) or the costliest ({costliest})"
        )
    total = {"low": _add(rtg_calibration, low), "high": _add(rtg_calibration, high)}
    # `rewards.alpha: auto` trains pilot students before the routed answers: their cost too
    tune = tune_plan(Run.open(cfg, str(store.root))) if cfg.rewards.tuned else None
    if cfg.max_cost is not None:
        covers = [k for k in ("low", "high") if total[k]["cost"] <= cfg.max_cost]
        notes.append(
            f"max_cost {cfg.max_cost:g} covers "
            + {2: "both estimates", 1: "the low estimate only", 0: "neither estimate"}[len(covers)]
            + " of Route then Generate (judging not included)"
        )
    return {
        "estimate": True,
        "config": cfg.name,
        "run_dir": str(store.root),
        "prompts": len(prompts),
        "calibration_prompts": n_cal,
        "routed_prompts": n_routed,
        "pilot": pilot,
        "teachers": teachers,
        "generate_then_select": _sum(teachers, everything),
        "route_then_generate": {
            "calibration": rtg_calibration,
            "routed_shares": routed_shares,
            "routed": {"low": low, "high": high},
            "total": total,
        },
        "max_cost": cfg.max_cost,
        # what the run directory's logs record already (the ledger): a rerun pays only
        # for what is missing
        "spent": spent(store, cfg),
        "tune": tune,
        "notes": notes,
    }


def _prompts(cfg: RunConfig, store: RunArtifacts) -> tuple[list[Prompt], list[str], int, int]:
    """(prompts, the calibration ids drawn already, how many calibrate, how many are
    routed): the run directory's once `prepare` is done, else the config's prompts
    (loaded, nothing drawn)."""
    if store.marker("prepare") is not None:
        split = store.split()
        n_cal, n_routed = len(split.calibration), len(split.routed)
        return store.prompts(), split.calibration, n_cal, n_routed
    prompts = load_prompts(cfg.prompts)
    n_cal = min(cfg.calibration.size, len(prompts))
    return prompts, [], n_cal, len(prompts) - n_cal


def _pilot(run: Run, n: int) -> dict[str, float | None]:
    """Ask each generating teacher the first `n` calibration prompts; seconds per answer
    of the answers asked now (None where every one was cached already)."""
    ids = run.store.split().calibration[:n]
    seconds: dict[str, float | None] = {}
    for name in generating_teachers(run.cfg):
        started = time.perf_counter()
        asked = ask_teacher(run, run.cfg.teacher(name), ids, "plan --pilot")
        elapsed = time.perf_counter() - started
        seconds[name] = elapsed / asked["generated"] if asked["generated"] else None
    return seconds


def _per_answer(
    cfg: RunConfig,
    store: RunArtifacts,
    teacher: TeacherConfig,
    prompts: list[Prompt],
    calibration: list[str],
    timing: dict[str, float | None],
) -> dict[str, Any]:
    """One answer of `teacher`: expected tokens (and where they come from), money, seconds."""
    fp = teacher_fingerprint(teacher)
    rowlog = store.generation_log(teacher.name)
    rows = [rowlog.get((pid, fp)) for pid in calibration]
    answers = [r for r in rows if r is not None and r["error"] is None]
    answers = [r for r in answers if r.get("provenance") != "imported"]
    counted = [r["prompt_tokens"] for r in answers if r.get("prompt_tokens", 0) > 0]
    if counted:
        prompt_tokens, prompt_from = float(np.mean(counted)), f"measured ({len(counted)} answers)"
    else:
        chars = np.mean([len(p.text) for p in prompts]) if prompts else 0.0
        prompt_tokens = (len(teacher.system_prompt or "") + chars) / CHARS_PER_TOKEN
        prompt_from = f"prompt length at {CHARS_PER_TOKEN} characters a token"
    if teacher.name in cfg.routing.expected_tokens:
        completion = float(cfg.routing.expected_tokens[teacher.name])
        completion_from = "routing.expected_tokens"
    elif answers:
        completion = float(np.mean([r["completion_tokens"] for r in answers]))
        completion_from = f"measured ({len(answers)} answers)"
    else:
        completion = float(teacher.generation.max_new_tokens)
        completion_from = "max_new_tokens (upper bound)"
    return {
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_from": prompt_from,
        "completion_tokens": completion,
        "completion_tokens_from": completion_from,
        "cost": Price.of(teacher).cost(prompt_tokens, completion),
        "seconds": timing.get(teacher.name),
    }


def _routed_shares(store: RunArtifacts, teachers: dict[str, Any]) -> dict[str, float] | None:
    """Each teacher's share of the routed prompts in the run directory's routes, if any."""
    if not store.routes_path().exists():
        return None
    chosen = [r["teacher"] for r in store.routes()]
    if not chosen:
        return None
    return {t: chosen.count(t) / len(chosen) for t in teachers}


def _extremes(teachers: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The cheapest and the costliest teacher per answer (by completion tokens where no
    teacher has a price)."""

    def key(t: str) -> tuple[float, float]:
        return teachers[t]["cost"], teachers[t]["completion_tokens"]

    return min(teachers, key=key), max(teachers, key=key)


def _sum(teachers: dict[str, dict[str, Any]], answers: dict[str, float]) -> dict[str, Any]:
    """The figures of `answers[t]` answers of each teacher t; wall time (one teacher after
    another, as the local executor runs them) None unless every teacher asked was timed."""
    out: dict[str, Any] = {"generations": sum(answers.values())}
    for key in ("prompt_tokens", "completion_tokens", "cost"):
        out[key] = sum(n * teachers[t][key] for t, n in answers.items())
    timed = [teachers[t]["seconds"] for t, n in answers.items() if n]
    out["wall_s"] = (
        None if None in timed else sum(n * teachers[t]["seconds"] for t, n in answers.items() if n)
    )
    return out


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: None if a[k] is None or b[k] is None else a[k] + b[k] for k in FIGURES}


def plan_lines(estimate: dict[str, Any]) -> list[str]:
    """The plan in lines of text (`persyn plan` prints them)."""
    rtg = estimate["route_then_generate"]
    lines = [
        f"plan for {estimate['config']!r} (estimates; "
        + (
            f"pilot of {estimate['pilot']} answers per teacher)"
            if estimate["pilot"]
            else "no model was called)"
        ),
        f"prompts: {estimate['prompts']}: {estimate['calibration_prompts']} calibration (every "
        f"teacher answers), {estimate['routed_prompts']} routed (one teacher each)",
        "",
        f"{'teacher':<20} {'prompt tok':>10} {'completion tok':>14} {'cost/answer':>12} "
        f"{'s/answer':>9}  completion tokens from",
    ]
    for name, t in estimate["teachers"].items():
        lines.append(
            f"{name:<20} {t['prompt_tokens']:>10.1f} {t['completion_tokens']:>14.1f} "
            f"{t['cost']:>12.6f} {_maybe(t['seconds'], '{:.2f}'):>9}  "
            f"{t['completion_tokens_from']}"
        )
    lines += [
        "",
        f"{'':<28} {'generations':>11} {'completion tok':>14} {'cost':>12} {'wall time':>10}",
        _figures("Generate then Select", estimate["generate_then_select"]),
        _figures("Route then Generate, low", rtg["total"]["low"]),
        _figures("Route then Generate, high", rtg["total"]["high"]),
        _figures("  of which calibration", rtg["calibration"]),
        "",
        f"spent so far in {estimate['run_dir']} (its logs): {estimate['spent']:.4f}"
        + ("" if estimate["max_cost"] is None else f"; max_cost {estimate['max_cost']:g}"),
        *(f"note: {n}" for n in estimate["notes"]),
        *(["", *estimate["tune"]] if estimate["tune"] else []),
    ]
    return lines


def _figures(label: str, f: dict[str, Any]) -> str:
    wall = "unknown" if f["wall_s"] is None else f"{f['wall_s']:.0f} s"
    return (
        f"{label:<28} {f['generations']:>11.0f} {f['completion_tokens']:>14.0f} "
        f"{f['cost']:>12.4f} {wall:>10}"
    )


def _maybe(x: float | None, pattern: str) -> str:
    return "unknown" if x is None else pattern.format(x)

"""Routing prompts from families the calibration set never saw: `routing.uncovered` =
`route`, `fallback` and `calibrate` against the oracle (Generate-then-Select).

Prompts: arithmetic word problems in the demo's template (`word`, in distribution) and
the same problems in two phrasings calibration never sees: a bare expression (`expr`) and
a numbered list of steps (`list`). The calibration set is pinned to `word` prompts (the
bench rewrites the split after `prepare`). Teachers are Python functions (cheap, no model)
that mimic LLM teachers with uneven strengths:

    concise   one line; right on `word`, answers the starting number elsewhere
    steps     step by step; right on `word` and `list`, wrong on `expr`
    calc      "= value"; right on `expr` and on one-step `word` problems only
    general   a long generic explanation; right everywhere (the robust teacher)

The student is the tests' tiny random model (learnability is real but from random
weights). One run directory: prepare .. train-router once, then `route` under each
policy (the earlier stages stay valid: only `routing` changes). The oracle: every teacher
answers every routed prompt, scored like calibration prompts (function teachers and the
tiny student make that cheap: the routers' training is most of the time).

Two more rows are not policies but ceilings of the router's encoder space: each routed
prompt routed by the neighbour vote over every other routed prompt scored by every teacher
(leave-one-out), and by the router trained on the calibration prompts and the routed
prompts of the other folds, all scored (5-fold cross-fitting): what active calibration
could reach in this space with 24-30 times its budget of scored prompts.

`--seed` draws other problems and another calibration set: a replicate. Each seed writes
its own section of bench/RESULTS.md and its counts to bench/coverage/seed-<seed>.json;
the summary section pools the seeds recorded there.

A routed prompt is *far below the oracle* when the oracle's reward minus its teacher's
exceeds FAR (combined reward scale, min-max normalised within the prompt). A prompt that
active calibration added takes its best answer (every teacher answered it). Each policy, and the
oracle, works in its own copy of the trained run directory, so no policy scores answers
another asked for.

    PYTHONPATH=src python bench/bench_coverage.py --seed 0   # 5-10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # the prompt set and teachers below
from results_md import replace_section

from persyn.artifacts import RouterCheckpoint
from persyn.config import parse_config
from persyn.demo.prompts import arithmetic
from persyn.demo.tiny_student import build_tiny_student
from persyn.method import neighbour_vote
from persyn.pipeline import Run, run_stage
from persyn.router.routers import Router
from persyn.stages.common import generate_rows
from persyn.stages.routing import route_prompts
from persyn.stages.score import reward_table, score_responses
from persyn.stages.train_router import fit_and_save
from persyn.stages.verify import verify_prepare
from persyn.teachers.base import Prompt

FAR = 0.3  # "far below the oracle": more than this on the combined reward scale
IN_DIST, UNSEEN = "word", ("expr", "list")
N_WORD, N_UNSEEN, N_CALIBRATION = 300, 60, 120  # unseen: per family
TEACHERS = ("concise", "steps", "calc", "general")
SEEDS_DIR = Path(__file__).with_name("coverage")  # each seed's counts, for the summary


# -- the prompt set: the demo's word problems and two phrasings of the same problems ------
def coverage_prompts(num_prompts: int, seed: int) -> list[Prompt]:
    """`num_prompts` word problems, then N_UNSEEN of each unseen phrasing."""
    word = arithmetic(num_prompts + 2 * N_UNSEEN, seed)
    for p in word[:num_prompts]:
        p.meta["family"] = IN_DIST
    out = word[:num_prompts]
    for f, family in enumerate(UNSEEN):
        for p in word[num_prompts + f * N_UNSEEN : num_prompts + (f + 1) * N_UNSEEN]:
            out.append(_rephrase(p, family))
    return out


def _rephrase(p: Prompt, family: str) -> Prompt:
    start, steps = p.meta["start"], p.meta["steps"]
    if family == "expr":
        expr = str(start)
        for op, n in steps:
            expr = f"({expr} {op} {n})" if op != "*" else f"{expr} * {n}"
        text = f"Compute {expr}. Give the number only."
    else:
        lines = [f"1. Start from {start}."]
        names = {"+": "Add", "-": "Subtract", "*": "Multiply by"}
        lines += [f"{k}. {names[op]} {n}." for k, (op, n) in enumerate(steps, 2)]
        text = "Follow the numbered instructions and report the result.\n" + "\n".join(lines)
    return Prompt(
        id=f"{family}-{p.id}",
        messages=[{"role": "user", "content": text}],
        kind="math",
        reference=p.reference,
        meta={**p.meta, "family": family},
    )


# -- the teachers --------------------------------------------------------------------------
def _value(p: Prompt) -> int:
    value = p.meta["start"]
    for op, n in p.meta["steps"]:
        value = {"+": value + n, "-": value - n, "*": value * n}[op]
    return value


def concise(p: Prompt) -> str:
    right = p.meta["family"] == "word"
    return f"The answer is {_value(p) if right else p.meta['start']}."


def steps(p: Prompt) -> str:
    value, lines = p.meta["start"], [f"We start with {p.meta['start']}."]
    for op, n in p.meta["steps"]:
        value = {"+": value + n, "-": value - n, "*": value * n}[op]
        lines.append(f"Then {op} {n} gives {value}.")
    answer = value if p.meta["family"] != "expr" else value + 1  # slips on bare expressions
    return "\n".join([*lines, f"The answer is {answer}."])


def calc(p: Prompt) -> str:
    right = p.meta["family"] == "expr" or len(p.meta["steps"]) == 1
    return f"= {_value(p) if right else _value(p) - 2}"


def general(p: Prompt) -> str:
    return (
        "This is a question about numbers, and it is worth reading carefully before "
        "answering. Working through each operation in order, keeping track of the running "
        f"total as it changes, the final result comes out as {_value(p)}. "
        f"The answer is {_value(p)}."
    )


# -- the bench -----------------------------------------------------------------------------
def config(
    lm: Path, run_dir: Path, router: str = "bradley-terry", seed: int = 0, **routing: Any
) -> Any:
    return parse_config(
        {
            "name": "bench-coverage",
            "run_dir": str(run_dir),
            "student": {"model": str(lm), "dtype": "float32", "max_length": 256},
            "teachers": [
                {"name": t, "backend": "scripted", "model": f"bench_coverage:{t}"} for t in TEACHERS
            ],
            "prompts": {
                "builtin": "bench_coverage:coverage_prompts",
                "num_prompts": N_WORD,
                "seed": seed,
            },
            "calibration": {"size": N_CALIBRATION, "seed": 0},
            "rewards": {"quality": [{"kind": "math"}]},
            "router": {"kind": router, "epochs": 100},
            "routing": routing,
        }
    )


def pin_calibration(run: Run, seed: int) -> None:
    """The calibration set: N_CALIBRATION `word` prompts only (the draw is random over all
    prompts); the prepare marker takes the new split as its output."""
    split = run.store.split()
    word = [p.id for p in run.prompts if p.meta["family"] == IN_DIST]
    calibration = sorted(random.Random(seed).sample(word, N_CALIBRATION))
    ids = list(calibration)
    random.Random(run.cfg.router.seed).shuffle(ids)
    n_test, n_val = round(0.15 * len(ids)), round(0.15 * len(ids))
    split.calibration = calibration
    split.router_test, split.router_val = sorted(ids[:n_test]), sorted(ids[n_test : n_test + n_val])
    split.router_train = sorted(ids[n_test + n_val :])
    split.routed = [p.id for p in run.prompts if p.id not in set(calibration)]
    run.store.write_split(split)
    run.store.update_marker("prepare", outputs=verify_prepare(run, None).digest)


def oracle_rewards(run: Run, sample: list[str]) -> dict[str, dict[str, float]]:
    """Generate-then-Select on `sample`: every teacher's combined reward per prompt."""
    for t in run.cfg.teachers:
        generate_rows(run, t, sample, "oracle")
    learn, qual, _ = score_responses(run, sample)
    table = reward_table(run, sample, learn, qual)
    return {
        pid: {t: float(np.nan_to_num(v, nan=-1.0)) for t, v in zip(TEACHERS, row, strict=True)}
        for pid, row in zip(sample, table.reward, strict=True)
    }


def measure(
    run: Run, oracle: dict[str, dict[str, float]], group: list[str], added: list[str]
) -> dict[str, float]:
    """Over the prompts of `group`: how many are far below the oracle, and the mean reward
    of their teacher and of the oracle's. A prompt active calibration added takes the
    best of its answers by its reward table, as the export does."""
    routes = {r["prompt_id"]: r["teacher"] for r in run.store.routes()}
    if added:
        learn, qual, _ = score_responses(run, added)
        routes.update(zip(added, reward_table(run, added, learn, qual).oracle, strict=True))
    return against_oracle(oracle, group, routes)


def against_oracle(
    oracle: dict[str, dict[str, float]], group: list[str], routes: dict[str, str]
) -> dict[str, float]:
    """Far below the oracle and mean rewards over `group`, each prompt with its routed
    teacher."""
    gaps, rewards, best = [], [], []
    for pid in group:
        top = max(oracle[pid].values())
        got = oracle[pid][routes[pid]]
        gaps.append(top - got)
        rewards.append(got)
        best.append(top)
    return {
        "far": int((np.array(gaps) > FAR).sum()),
        "prompts": len(group),
        "reward": float(np.mean(rewards)),
        "oracle": float(np.mean(best)),
    }


BOUND = "bound: one teacher per family, picked with the oracle (not a policy)"


def family_bound(oracle: dict[str, dict[str, float]], family: dict[str, str]) -> dict[str, str]:
    """Each prompt's teacher when each prompt family goes to the one teacher with the
    fewest of its prompts far below the oracle, chosen by looking at the oracle (so a bound
    on a router that tells the families apart and picks one teacher for each, not a
    policy)."""
    routes = {}
    for fam in sorted(set(family.values())):
        members = [pid for pid, f in family.items() if f == fam]
        counts = {
            t: sum(max(oracle[p].values()) - oracle[p][t] > FAR for p in members) for t in TEACHERS
        }
        teacher = min(TEACHERS, key=lambda t: (counts[t], TEACHERS.index(t)))
        routes.update(dict.fromkeys(members, teacher))
    return routes


def oracle_rows(
    name: str,
    groups: dict[str, list[str]],
    oracle: dict[str, dict[str, float]],
    routes: dict[str, str],
) -> list[dict[str, Any]]:
    """A row per group for routes that are no policy's (a bound or a ceiling: nothing
    generated beyond the oracle)."""
    return [
        {
            "policy": name,
            "group": group,
            **against_oracle(oracle, ids, routes),
            "extra": None,
            "uncovered": None,
            "added": None,
        }
        for group, ids in groups.items()
    ]


# -- the encoder's ceiling: the vote and the router with every other routed prompt scored --
VOTE_CEILING = "ceiling: the vote, every other routed prompt scored (not a policy)"
FOLDS = 5
ROUTER_CEILING = (
    f"ceiling: the router, routed prompts of {FOLDS - 1} of {FOLDS} folds scored (not a policy)"
)


def vote_ceiling(
    run: Run, oracle: dict[str, dict[str, float]], routed: list[str]
) -> dict[str, str]:
    """Each routed prompt's teacher by the neighbour vote (the default width and caution,
    in the trained router's encoder space) over every other routed prompt, each with its
    oracle rewards (leave-one-out): what active calibration's vote could do in this space
    with the oracle of about 30 times its budget (299 prompts against its 10 or so)."""
    cfg = run.cfg
    by_id = run.prompts_by_id()
    router = Router.load(run.store.router_dir(), cfg.teacher_names)
    points = router.embeddings([by_id[pid].text for pid in routed])
    reference = RouterCheckpoint(run.store.router_dir()).novelty()
    assert points is not None and reference is not None  # an encoder router
    reward = np.array([[oracle[pid][t] for t in TEACHERS] for pid in routed])
    width = float(cfg.routing.vote_width)
    routes = {}
    for i, pid in enumerate(routed):
        others = np.arange(len(routed)) != i
        choice = neighbour_vote(
            points[i : i + 1],
            points[others],
            reward[others],
            reference.k,
            width,
            caution=cfg.routing.vote_caution,
        )[0]
        routes[pid] = TEACHERS[choice]
    return routes


def router_ceiling(run: Run, routed: list[str], seed: int) -> dict[str, str]:
    """Each routed prompt's teacher by the configured router trained on the calibration
    prompts and the routed prompts outside its fold (FOLDS folds), all teachers' answers scored
    (cross-fitting: no prompt routed by a router that saw its rewards). `run` holds every
    teacher's answer to every routed prompt (the oracle's run)."""
    split = run.store.split()
    ids = split.calibration + routed
    learn, qual, _ = score_responses(run, ids)
    table = reward_table(run, ids, learn, qual)
    order = list(routed)
    random.Random(seed).shuffle(order)
    routes = {}
    for fold in range(FOLDS):
        held = order[fold::FOLDS]
        train = split.router_train + [pid for pid in order if pid not in held]
        folder = run.store.root / "ceiling" / f"fold-{fold}"
        fit_and_save(run, table, (train, split.router_val, split.router_test), folder)
        routing = route_prompts(run, held, folder, f"ceiling-fold-{fold}")
        routes.update(zip(held, [TEACHERS[c] for c in routing.choice.tolist()], strict=True))
    return routes


# active calibration as the rows below share it: the plain mean vote unless a row says
ACTIVE = {"uncovered": "calibrate", "active_budget": 0.1, "active_rounds": 4, "vote_caution": 0.0}
POLICIES: list[tuple[str, dict[str, Any]]] = [
    ("route", {}),
    ("fallback", {"uncovered": "fallback"}),
    ("fallback (general)", {"uncovered": "fallback", "uncovered_teacher": "general"}),
    ("calibrate, 2 rounds, width auto", {**ACTIVE, "active_rounds": 2, "vote_width": "auto"}),
    ("calibrate, 4 rounds, width auto", {**ACTIVE, "vote_width": "auto"}),
    # the default width since seeds 18-23 (bench/RESULTS.md); each row names its width and
    # caution, so the seeds recorded before a default changed keep their meaning
    ("calibrate, 4 rounds, width 0.05", {**ACTIVE, "vote_width": 0.05}),
    # the default since seeds 24-29
    (
        "calibrate, 4 rounds, width 0.05, caution 0.5",
        {**ACTIVE, "vote_width": 0.05, "vote_caution": 0.5},
    ),
]


def _share(far: int, prompts: int) -> str:
    return f"{far} of {prompts} ({far / prompts:.1%})" if prompts else "-"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _width(r: dict[str, Any]) -> str:
    """A round's vote width, with the leave-one-out loss of each candidate under `auto`."""
    if r.get("vote_width") is None:
        return "no neighbour vote"
    losses = r.get("vote_width_loss")
    if not losses:
        return f"the vote's width {r['vote_width']:g} (pinned)"
    tried = ", ".join(f"{w}: {v:.4f}" for w, v in losses.items() if v is not None)
    return f"the vote's width {r['vote_width']:g} (leave-one-out loss {tried})"


def run_seed(seed: int) -> dict[str, Any]:
    """Every policy on one replicate: per policy and group, the far-below count and mean
    rewards; per active-calibration round, the families added and the vote's width."""
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-coverage-"))
    lm = build_tiny_student(work / "lm")
    run = Run.open(config(lm, work / "run", seed=seed))
    run_stage(run, "prepare")
    pin_calibration(run, seed)
    run_stage(run, "train-router")
    trained = work / "run"  # each policy and the oracle in a copy: answers never leak across
    routed = run.store.split().routed
    by_id = run.prompts_by_id()
    groups = {
        "in distribution": [i for i in routed if by_id[i].meta["family"] == IN_DIST],
        "unseen families": [i for i in routed if by_id[i].meta["family"] != IN_DIST],
    }
    shutil.copytree(trained, work / "oracle")
    oracle_run = Run.open(config(lm, work / "oracle", seed=seed))
    oracle = oracle_rewards(oracle_run, routed)
    rows, rounds = [], []
    for p, (name, routing) in enumerate(POLICIES):
        shutil.copytree(trained, work / f"policy-{p}")
        run = Run.open(config(lm, work / f"policy-{p}", seed=seed, **routing))
        marker = run_stage(run, "route")
        active = marker.get("active") or []
        added = [pid for r in active for pid in r["added"]]
        for r in active:
            families = Counter(by_id[pid].meta["family"] for pid in r["added"])
            rounds.append(
                f"- {name}, round {r['round']}: added {dict(families)}; uncovered "
                f"{r['uncovered_before']:.1%} -> {r['uncovered_after']:.1%}, "
                f"{r['routes_changed']} routes changed; {_width(r)}; the vote overrode the "
                f"retrained router on {r.get('neighbours_decided', 0)}"
            )
        for group, ids in groups.items():
            rows.append(
                {
                    "policy": name,
                    "group": group,
                    **measure(run, oracle, ids, added),
                    "extra": (sum(r["generations"] for r in active) - len(added)) / len(routed),
                    "uncovered": marker["uncovered"]["share"],
                    "added": len(added),
                }
            )
    not_policies = {
        BOUND: family_bound(oracle, {pid: by_id[pid].meta["family"] for pid in routed}),
        VOTE_CEILING: vote_ceiling(oracle_run, oracle, routed),
        ROUTER_CEILING: router_ceiling(oracle_run, routed, seed),
    }
    for name, routes in not_policies.items():
        rows += oracle_rows(name, groups, oracle, routes)
    shutil.rmtree(work)
    return {
        "seed": seed,
        "routed": len(routed),
        "router": run.cfg.router.kind,
        "minutes": round((time.time() - started) / 60, 1),
        "rows": rows,
        "rounds": rounds,
    }


def seed_section(result: dict[str, Any]) -> str:
    header = (
        "| policy | prompts | far below oracle | mean reward | oracle | extra generations "
        "| uncovered (after) | prompts added |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['policy']} | {r['group']} | {_share(r['far'], r['prompts'])} | "
        f"{r['reward']:.3f} | {r['oracle']:.3f} | {_percent(r['extra'])} | "
        f"{_percent(r['uncovered'])} | {'-' if r['added'] is None else r['added']} |"
        for r in result["rows"]
    ]
    return "\n".join(
        [
            f"`bench/bench_coverage.py --seed {result['seed']}`: {N_WORD} word problems "
            f"({N_CALIBRATION} calibrate, pinned), {N_UNSEEN} each of two phrasings "
            f"calibration never saw (`expr`, `list`); four function teachers with uneven "
            f"strengths (see the module), the tiny random student, a {result['router']} "
            f"router. Oracle: every teacher on every one of the {result['routed']} routed "
            f"prompts. Far below = oracle reward - routed teacher's > {FAR}. Extra "
            f"generations: share of the routed prompts' one generation each. "
            f"{result['minutes']:.1f} min on 2 shared CPU cores.",
            "",
            header,
            *lines,
            "",
            "Active calibration, per round (families of the prompts added):",
            "",
            *result["rounds"],
        ]
    )


def summary_section(results: list[dict[str, Any]]) -> str:
    """Far below the oracle per policy and group: the seeds that ran it pooled, and each
    seed's count (a row added later has fewer seeds)."""
    seeds = [r["seed"] for r in results]
    cells: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
    for result in results:
        for r in result["rows"]:
            cells.setdefault((r["policy"], r["group"]), {})[result["seed"]] = (
                r["far"],
                r["prompts"],
            )
    lines = []
    for (policy, group), counts in cells.items():
        far, prompts = (sum(c[i] for c in counts.values()) for i in (0, 1))
        ran = [s for s in seeds if s in counts]
        span = f"{len(ran)}" + ("" if len(ran) == len(seeds) else f" ({_seed_list(ran)})")
        each = ", ".join(str(counts[s][0]) for s in ran)
        lines.append(f"| {policy} | {group} | {span} | {_share(far, prompts)} | {each} |")
    return "\n".join(
        [
            "Routed prompts far below the oracle (reward more than "
            f"{FAR} below it), pooled over the seeds of `bench/bench_coverage.py --seed` "
            f"({_seed_list(seeds)}) that ran the row, and each seed's count in seed order; "
            "each seed's own section has the details. `width auto`: the vote's width chosen "
            "by leave-one-out in each round; `width 0.05`: pinned (the default since seeds "
            "18-23); rows without `caution` vote by the plain mean reward (caution 0). "
            "The last three rows are not policies. The bound: each family routed to the one "
            "teacher with the fewest prompts far below the oracle, picked by looking at the "
            "oracle: what telling the families apart and choosing one teacher for each could "
            "do at best. The ceilings: each routed prompt routed by the neighbour vote "
            "(default width and caution) over every other routed prompt scored by every "
            "teacher, and by the router trained with the routed prompts of the other folds "
            "scored (5 folds): what the router's encoder space allows with 24-30 times "
            "active calibration's budget of scored prompts.",
            "",
            "| policy | prompts | seeds | far below oracle, pooled | far below, per seed |",
            "|---|---|---:|---:|---|",
            *lines,
        ]
    )


def _seed_list(seeds: list[int]) -> str:
    """Seeds as runs of consecutive numbers: 0-11, 14, 16-17."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the draw of the problems and the calibration set; each seed writes its own "
        "section and its counts (bench/coverage/seed-<seed>.json), and the summary pools "
        "the seeds recorded",
    )
    seed = ap.parse_args().seed
    result = run_seed(seed)
    SEEDS_DIR.mkdir(exist_ok=True)
    (SEEDS_DIR / f"seed-{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
    body = seed_section(result)
    print(body)
    replace_section(f"Coverage, bench_coverage --seed {seed}", body)
    results = [
        json.loads(path.read_text())
        for path in sorted(SEEDS_DIR.glob("seed-*.json"), key=lambda p: int(p.stem[5:]))
    ]
    replace_section("Coverage across seeds (bench_coverage)", summary_section(results))
    print(json.dumps({"minutes": result["minutes"]}))


if __name__ == "__main__":
    main()

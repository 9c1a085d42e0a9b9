"""Write the mini-replication's section of bench/RESULTS.md from a finished experiment.

Called by bench/run_replication.sh; reads the experiment's `results.csv` and
`per_prompt.json` and adds what the table alone does not show: every trained student
against the untrained one (paired bootstrap, the same resamples), which differences
from PerSyn have an interval that excludes zero, and the tuned arm's cost (pilot time,
new generations: from its run directory) beside its gain.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
from pathlib import Path
from typing import Any

import numpy as np
from results_md import RESULTS, replace_section  # bench/ is on sys.path when run as a script

from persyn.artifacts import ExperimentFiles, RunArtifacts
from persyn.config import RunConfig, load_config
from persyn.eval.baselines import alpha_run_dir
from persyn.eval.experiment import BASE_STUDENT, REFERENCE, output_dir, training_seeds
from persyn.eval.stats import paired_bootstrap
from persyn.eval.student import held_out_prompts, prompt_scores
from persyn.eval.tune import pilot_dataset, tune_settings
from persyn.eval.tune_report import duration, tune_pilots
from persyn.run import Run
from persyn.store import read_jsonl
from persyn.teachers.base import Generation, Prompt

ROOT = Path(__file__).resolve().parents[1]
TUNED = "persyn-tuned"  # the arm with `persyn tune`'s reward setting
# not baselines: PerSyn's arms, the untrained student, and Generate then Select (every
# teacher answers every prompt: PerSyn's reward at full generation cost)
NOT_BASELINES = (BASE_STUDENT, REFERENCE, TUNED, "oracle")

HEADINGS = {  # by the config's `name`
    "persyn-replication": "replication 2, arithmetic: PerSyn vs the baselines "
    "(student SFT, 3 seeds, 95% paired bootstrap CIs)",
    "persyn-replication-instruct": "replication 2, instructions: PerSyn vs the baselines "
    "(student SFT, 3 seeds, 95% paired bootstrap CIs)",
}

# (teacher, kind, what it reads, right on, answer format)
TEACHER_ROWS = [
    (
        "smol",
        "LLM: SmolLM2-135M-Instruct, the student's own model (family smollm2)",
        "the prompt text",
        "whatever it gets right",
        "its own words",
    ),
    (
        "boxed",
        "programmatic",
        "`meta` (start value, steps); never the text or the reference",
        "every problem",
        "LaTeX equations, `\\boxed{N}`",
    ),
    (
        "plain",
        "programmatic",
        "`meta` (same)",
        "1- and 2-step problems (a 3-step one's last step comes out 10 too high)",
        "`a + b = c.` ... `The answer is N.`",
    ),
    (
        "quick",
        "programmatic",
        "`meta` (same)",
        "1-step problems (it does only the first step)",
        "`The answer is N.`",
    ),
    *(
        (
            name,
            f"LLM: SmolLM2-135M-Instruct, system prompt {prompt}",
            "the prompt text",
            "the constraints it happens to satisfy",
            "its own words",
        )
        for name, prompt in [
            (
                "smol-exact",
                '"Follow every instruction in the request exactly, including its format."',
            ),
            ("smol-brief", '"Answer in one short sentence."'),
            ("smol-plain", '"You are a helpful assistant."'),
        ]
    ),
]
TEACHERS_NOTE = """Training, validation and held-out prompts come from three sides of a hash
partition of the normalised prompt text, so no held-out prompt equals a training prompt
(the experiment checks it, by normalised text, against the whole prompt table)."""


def _teachers(names: list[str]) -> list[str]:
    lines = [
        "Teachers (task and programmatic teachers: `src/persyn/demo/replication.py`):",
        "",
        "| teacher | kind | reads | right on | format |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in TEACHER_ROWS if row[0] in names]
    return [*lines, "", TEACHERS_NOTE]


def _load_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--started", required=True)
    parser.add_argument("--wall-s", type=int, required=True)
    parser.add_argument("--load", default="")
    parser.add_argument("--note", default="")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the file to write into")
    return parser.parse_known_args()  # the rest are `persyn experiment` flags (--quiet)


def _overrides(pairs: list[str]) -> dict[str, object]:
    import yaml

    return {k: yaml.safe_load(v) for k, _, v in (p.partition("=") for p in pairs)}


def _vs_untrained(per_prompt: dict[str, Any], resamples: int, seed: int) -> list[str]:
    scores, tasks = _scores(per_prompt, "scores")
    if BASE_STUDENT not in scores:
        return []
    own, diffs = paired_bootstrap(scores, tasks, BASE_STUDENT, resamples, seed)
    lines = ["| dataset | score | score - untrained | 95% CI (paired) |", "|---|---:|---:|---|"]
    for name, d in diffs.items():
        if name != BASE_STUDENT:
            lines.append(
                f"| {name} | {own[name].estimate:.3f} | {d.estimate:+.3f} | "
                f"[{d.low:+.3f}, {d.high:+.3f}] |"
            )
    return lines


def _level(prompt: Prompt) -> str:
    """The prompt's difficulty: steps of a problem, constraints of an instruction."""
    if "difficulty" in prompt.meta:
        return f"{prompt.meta['difficulty']}-step"
    return f"{prompt.meta.get('tier', 1)} constraint(s)"


def _by_level(cfg: RunConfig, per_prompt: dict[str, Any]) -> list[str]:
    """Held-out score per dataset and difficulty level of the prompt."""
    level = {p.id: _level(p) for p in held_out_prompts(cfg)}
    levels = sorted(set(level.values()))
    of = [level.get(i) for i in per_prompt["prompt_ids"]]
    counts = " / ".join(str(of.count(d)) for d in levels)
    lines = [f"| dataset | {' | '.join(levels)} |", "|---|" + "---:|" * len(levels)]
    for name, values in per_prompt["scores"].items():
        cells = []
        for d in levels:
            got = [v for v, at in zip(values, of, strict=True) if at == d]
            cells.append(f"{np.mean([0.0 if v is None else v for v in got]):.2f}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return [f"Held-out prompts per level: {counts}.", "", *lines]


def _training_data(cfg: RunConfig, out: ExperimentFiles, names: list[str]) -> list[str]:
    """Per dataset: which teachers wrote it, how many of its answers are right (the math
    verifier against the reference, or every constraint satisfied, strict), per level,
    and how long the answers are."""
    table = {p.id: p for p in RunArtifacts(cfg.run_dir).prompts()}
    levels = sorted({_level(p) for p in table.values()})
    lines = [
        f"| dataset | teachers | answers right | right on {' / '.join(levels)} "
        "| words per answer |",
        "|---|---|---:|---|---:|",
    ]
    for name in names:
        path = out.dataset(name)
        if not path.is_file():
            continue
        rows = read_jsonl(path)
        prompts = [table[r["id"]] for r in rows]
        answers = {r["id"]: Generation(r["id"], r["messages"][-1]["content"]) for r in rows}
        right = [s["score"] or 0.0 for s in prompt_scores(prompts, answers)]
        by_level = []
        for d in levels:
            got = [ok for ok, p in zip(right, prompts, strict=True) if _level(p) == d]
            by_level.append(f"{np.mean(got):.2f}" if got else "-")
        words = np.mean([len(a.text.split()) for a in answers.values()])
        shares: dict[str, int] = {}
        for r in rows:
            shares[r["teacher"]] = shares.get(r["teacher"], 0) + 1
        mix = " ".join(f"{t} {n / len(rows):.0%}" for t, n in sorted(shares.items()))
        lines.append(
            f"| {name} | {mix} | {np.mean(right):.2f} | {' / '.join(by_level)} | {words:.0f} |"
        )
    return lines


def _verdicts(rows: list[dict[str, str]]) -> list[str]:
    out = []
    for r in rows:
        if r["dataset"] in (REFERENCE, BASE_STUDENT) or not r.get("vs_persyn"):
            continue
        d, lo, hi = (float(r[k]) for k in ("vs_persyn", "vs_persyn_low", "vs_persyn_high"))
        verdict = _verdict(lo, hi, "PerSyn worse", "PerSyn better")
        out.append(f"- {r['dataset']}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]: {verdict}")
    return out


def _verdict(low: float, high: float, above: str, below: str) -> str:
    """What the interval of a difference says: `above` 0, `below` 0, or neither."""
    if low > 0:
        return f"{above} (interval excludes 0)"
    if high < 0:
        return f"{below} (interval excludes 0)"
    return "no difference detected (interval contains 0)"


def _scores(per_prompt: dict[str, Any], key: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(every dataset's scores from `per_prompt[key]`, NaN where no verifier, the prompts'
    task kinds), both restricted to the prompts a verifier scores."""
    tasks = np.array(per_prompt["tasks"])
    keep = tasks != ""
    scores = {n: np.array(v, dtype=float)[..., keep] for n, v in per_prompt[key].items()}
    return scores, tasks[keep]


def _tuning(cfg: RunConfig, rows: list[dict[str, str]], per_prompt: dict[str, Any]) -> list[str]:
    """The tuned arm: the tune's table and choice, what it cost (pilot training and
    evaluation time from their records, new teacher generations from the run's files)
    and what it gained over PerSyn at the config's alpha and over the best baseline."""
    base = Path(cfg.run_dir)
    auto = cfg.model_copy(update={"rewards": cfg.rewards.model_copy(update={"alpha": "auto"})})
    run = Run.open(auto, str(alpha_run_dir(base, "auto")))
    files = run.store.tune_files()
    if TUNED not in per_prompt["scores"] or not files.table_md.is_file():
        return [f"No tuned arm yet (`{TUNED}` without results, or no `{_shown(files.table_md)}`)."]
    settings, _ = tune_settings(auto)
    done, left = tune_pilots(run, settings)
    train_s = sum(r.get("runtime_s") or 0 for r in done)
    timed = [r["evaluation_s"] for r in done if "evaluation_s" in r]
    calibration = set(run.store.split().calibration)
    pilot_rows = [r for s in settings for r in read_jsonl(pilot_dataset(files, auto, s))]
    outside = sum(r["id"] not in calibration for r in pilot_rows)
    ledger = run.store.summary()["spend"]["by_stage"]
    asked = ledger["calibration"]["requests"]
    teachers = len(cfg.teachers)
    lines = [
        f"The tuned arm (`{TUNED}`) is the run with `rewards.alpha: auto` in "
        f"`{_shown(run.store.root)}`; its tune (`{_shown(files.table_md)}`):",
        "",
        files.table_md.read_text().strip(),
        "",
        "Cost of tuning:",
        "",
        f"- pilot students: {len(done)} trained and evaluated for {len(settings)} settings "
        f"(settings that pick the same answers share one; {left} not done), "
        f"{auto.tune.max_steps} steps each, seeds {auto.tune.seeds}",
        f"- pilot time (wall clock on this CPU machine, from the pilots' training records): "
        f"{duration(train_s + sum(timed))}: training {duration(train_s)} ("
        + " / ".join(duration(r.get("runtime_s") or 0) for r in done)
        + "), evaluation "
        + _evaluation_time(timed, len(done)),
        f"- new teacher generations for tuning: {outside}: the {len(pilot_rows)} rows of the "
        f"{len(settings)} pilot datasets answer the run's calibration prompts ({outside} "
        f"outside them), whose answers the calibrate stage had made ({asked} calibration "
        f"requests in the tuned run's ledger for {teachers} teachers x {len(calibration)} "
        "prompts)",
        "",
        "Gain on the held-out prompts (score difference, 95% paired CI over prompts and seeds):",
        "",
        *_gains(cfg, rows, per_prompt),
    ]
    return lines


def _evaluation_time(timed: list[float], pilots: int) -> str:
    """The pilots' evaluation time, as far as their records hold it (`evaluation_s`)."""
    if not timed:
        return "not timed (these pilots ran before the training record held `evaluation_s`)"
    if len(timed) < pilots:
        return f"{duration(sum(timed))} for the {len(timed)} of {pilots} pilots timed"
    return duration(sum(timed))


def _shown(path: Path) -> str:
    """`path` as the section shows it: from the repository root where it is inside."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _gains(cfg: RunConfig, rows: list[dict[str, str]], per_prompt: dict[str, Any]) -> list[str]:
    """The tuned arm against PerSyn at the config's alpha and against the best baseline,
    each in turn the reference of the experiment's paired bootstrap (the same draws of
    prompts and seeds as the results' intervals: tuned - PerSyn is the results' figure)."""
    baselines = [r for r in rows if r["dataset"] not in NOT_BASELINES]
    best = max(baselines, key=lambda r: float(r["score"]))["dataset"] if baselines else None
    scores, tasks = _scores(per_prompt, "seed_scores")
    ex = cfg.experiment
    lines = []
    for other, what in [
        (REFERENCE, f"PerSyn at alpha {cfg.rewards.alpha}"),
        (best, "the best baseline; Oracle, Generate then Select, is not one"),
    ]:
        if other not in scores:
            continue
        _, diffs = paired_bootstrap(
            scores, tasks, other, ex.bootstrap_resamples, ex.seed, level=ex.confidence
        )
        d = diffs[TUNED]
        lines.append(
            f"- {TUNED} - {other} ({what}): {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]: "
            + _verdict(d.low, d.high, "tuned better", "tuned worse")
        )
    return lines


def main() -> None:
    args, _ = _load_args()
    cfg = load_config(Path(args.config), _overrides(args.set))
    out = ExperimentFiles(output_dir(cfg))
    table = out.results_md.read_text().strip()
    rows = list(csv.DictReader(out.results_csv.open()))
    per_prompt = json.loads(out.per_prompt.read_text())
    ex, tc, ev = cfg.experiment, cfg.student_training, cfg.evaluation
    trained = [r for r in rows if r["dataset"] != BASE_STUDENT]
    n_rows = trained[0]["rows"] if trained else "?"
    command = " ".join(
        ["bench/run_replication.sh", args.config, *(f"--set {shlex.quote(v)}" for v in args.set)]
    )
    heading = HEADINGS.get(cfg.name, f"replication: {cfg.name}")
    body = [
        *([f"**{args.note}**", ""] if args.note else []),
        f"Command: `{command}` (= `persyn experiment {args.config}`, then this section). "
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs "
        f"(load average before / after: {args.load}). Started {args.started}; wall time "
        f"{args.wall_s / 60:.1f} min (a resumed run counts only its own part).",
        "",
        f"Setting: student SmolLM2-135M-Instruct, {tc.method} (r={tc.lora_r}), "
        f"{tc.epochs:g} epochs, lr {tc.learning_rate:g}, batch {tc.batch_size}, training "
        f"seeds {training_seeds(cfg)} (one student per dataset and seed; scores are the mean "
        f"over seeds); {n_rows} training rows per dataset (the same prompts for every "
        f"dataset); {len(per_prompt['prompt_ids'])} held-out prompts, greedy, "
        f"{ev.max_new_tokens} new tokens; alpha {cfg.rewards.alpha} for PerSyn and Oracle; "
        f"{ex.bootstrap_resamples} paired bootstrap resamples of the held-out prompts and "
        f"the training seeds (seed {ex.seed}), {ex.confidence:.0%} percentile intervals.",
        "",
        *_teachers(cfg.teacher_names),
        "",
        "### Results",
        "",
        table,
        "",
        "### Against PerSyn (score - PerSyn, 95% paired CI)",
        "",
        *_verdicts(rows),
        "",
        *(
            ["### Tuning: its cost beside its gain", "", *_tuning(cfg, rows, per_prompt), ""]
            if TUNED in ex.datasets
            else []
        ),
        "### Did training move the students? (score - untrained student, 95% paired CI)",
        "",
        *_vs_untrained(per_prompt, ex.bootstrap_resamples, ex.seed),
        "",
        "### Held-out score by level",
        "",
        *_by_level(cfg, per_prompt),
        "",
        "### What each student was trained on",
        "",
        *_training_data(cfg, out, ex.datasets),
    ]
    replace_section(heading, "\n".join(body), args.results)
    print(f"{args.results}: section {heading!r} written")


if __name__ == "__main__":
    main()

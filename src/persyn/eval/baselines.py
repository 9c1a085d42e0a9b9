"""Datasets to compare PerSyn against, built from the same teachers and prompts.

Each baseline is a function `choose(ctx) -> {prompt id: teacher}` in `BASELINES`; every
dataset covers the same prompts, so all are the same size. Teacher statistics come from
the calibration prompts (where every teacher answered and was scored); a teacher's mean
quality counts its failed answers as 0 (the bottom of every quality signal's scale), so
a teacher that often fails is not "strong". Only teachers that can generate are chosen
(`generating_teachers`: not those known from imported answers alone).

- `persyn`: the run's own dataset: oracle teacher on calibration prompts, router elsewhere.
- `strong`: the teacher with the highest mean quality, for every prompt.
- `family-strong`: the same, among teachers whose `family` is the student's `family`.
- `mix`: per prompt, the strongest teacher (by mean quality) with probability
  `experiment.mix_strong_share`, else the weakest, seeded. The default 0.2 is Mix
  Distillation's 1:4 (Li et al. 2025, arXiv 2502.12143: small students learn better from
  one strong-teacher answer for four from a small teacher).
- `car`: one teacher for all prompts, the argmax of the compatibility-adjusted reward
  CAR_n = Q_n / (1 + beta * NLL_n), Q_n the teacher's mean quality and NLL_n the student's
  mean per-token negative log-likelihood of its responses (= -mean learnability), both
  over calibration prompts; beta = `experiment.car_beta` (1). After Xu et al. 2024
  ("Stronger models are not stronger teachers"): reward divided by a loss-based risk.
- `random`: a uniformly random teacher per prompt, seeded.
- `oracle`: Generate then Select: every teacher answers every prompt, the argmax of the
  combined reward (same alpha and normalisation as the run) is kept.
- `quality-only` / `learnability-only`: PerSyn with alpha 0 / 1 (router retrained).
- `persyn-tuned`: PerSyn with `rewards.alpha: auto`: the reward setting `persyn tune`
  chooses on the `tune.validation` prompts (pilot students on the calibration answers),
  router retrained; compare it with `persyn` (the config's alpha) on the same prompts.

Answers a baseline needs that the run lacks are generated through
`persyn.stages.common.generate_rows` with the run's executor and cache, so nothing is
generated twice; the alpha variants run the pipeline in a sibling run directory whose row
logs are hard links of the run's, so rows they generate land in the same cache.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from persyn.artifacts import Provenance, RunArtifacts, dataset_row
from persyn.config import ConfigError, ExperimentConfig
from persyn.pipeline import Run, run_stage
from persyn.progress import log
from persyn.stages.common import (
    generate_rows,
    generating_columns,
    generating_teachers,
    teacher_fingerprint,
    trained_text,
)
from persyn.stages.score import (
    combined_reward,
    failed_answer,
    failed_answers,
    score_responses,
)


@dataclass
class BaselineContext:
    run: Run
    prompt_ids: list[str]
    options: ExperimentConfig


Choice = dict[str, str]


def calibration_scores(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Raw (quality, learnability) [calibration prompts, teachers] of the reward table;
    failed answers have quality 0."""
    rewards = run.store.rewards()
    return np.where(rewards.failed, 0.0, rewards.quality), rewards.learnability


def mean_quality(run: Run) -> dict[str, float]:
    """Mean calibration quality of each teacher that can generate (failed answers: 0)."""
    quality, _ = calibration_scores(run)
    means = dict(zip(run.cfg.teacher_names, np.nanmean(quality, axis=0).tolist(), strict=True))
    return {t: means[t] for t in generating_teachers(run.cfg)}


def _best(scores: dict[str, float]) -> str:
    """Highest score; ties go to the teacher listed first in the config."""
    return max(scores, key=lambda t: (scores[t], -list(scores).index(t)))


def _everywhere(ctx: BaselineContext, teacher: str) -> Choice:
    return dict.fromkeys(ctx.prompt_ids, teacher)


def strong(ctx: BaselineContext) -> Choice:
    return _everywhere(ctx, _best(mean_quality(ctx.run)))


def family_strong(ctx: BaselineContext) -> Choice:
    cfg = ctx.run.cfg
    family = cfg.student.family
    quality = mean_quality(ctx.run)
    members = [t.name for t in cfg.teachers if family and t.family == family and t.name in quality]
    if not members:
        raise ConfigError(
            f"family-strong: no teacher has the student's family {family!r} among those "
            "that can generate; set student.family and the `family` of the teachers of "
            "that family"
        )
    return _everywhere(ctx, _best({t: quality[t] for t in members}))


def mix(ctx: BaselineContext) -> Choice:
    quality = mean_quality(ctx.run)
    strongest = _best(quality)
    weakest = _best({t: -q for t, q in quality.items()})
    rng = random.Random(ctx.options.seed)
    share = ctx.options.mix_strong_share
    return {pid: strongest if rng.random() < share else weakest for pid in ctx.prompt_ids}


def car_scores(run: Run, beta: float) -> dict[str, float]:
    """CAR_n = Q_n / (1 + beta * NLL_n) per teacher (see the module docstring)."""
    _, learnability = calibration_scores(run)
    mean_nll = -np.nanmean(learnability, axis=0)
    nll = dict(zip(run.cfg.teacher_names, mean_nll.tolist(), strict=True))
    return {t: q / (1 + beta * nll[t]) for t, q in mean_quality(run).items()}


def car(ctx: BaselineContext) -> Choice:
    return _everywhere(ctx, _best(car_scores(ctx.run, ctx.options.car_beta)))


def random_teacher(ctx: BaselineContext) -> Choice:
    rng = random.Random(ctx.options.seed)
    names = generating_teachers(ctx.run.cfg)
    return {pid: rng.choice(names) for pid in ctx.prompt_ids}


def oracle(ctx: BaselineContext) -> Choice:
    run = ctx.run
    able = generating_teachers(run.cfg)
    for name in able:
        generate_rows(run, run.cfg.teacher(name), ctx.prompt_ids, "oracle")
    learnability, quality, scored = score_responses(run, ctx.prompt_ids)
    # Imported-only teachers have no answers here; their columns stay empty.
    columns = generating_columns(run.cfg)
    only = np.full(learnability.shape, np.nan)
    only[:, columns] = learnability[:, columns]
    _, best = combined_reward(run.cfg, only, quality, failed=failed_answers(run, ctx.prompt_ids))
    names = run.cfg.teacher_names
    log(f"oracle: {scored} new learnability scores")
    return {pid: names[j] for pid, j in zip(ctx.prompt_ids, best, strict=True) if j >= 0}


def _dataset_choice(run: Run, ids: list[str]) -> Choice:
    teachers = {r["id"]: r["teacher"] for r in run.store.dataset()}
    return {pid: teachers[pid] for pid in ids if pid in teachers}


def persyn(ctx: BaselineContext) -> Choice:
    return _dataset_choice(ctx.run, ctx.prompt_ids)


def _link_tree(source: Path, target: Path) -> None:
    """Copy a run directory as hard links (a plain copy across file systems).

    Row logs are only ever appended to, so appends through either name reach both runs;
    artifacts are replaced by rename, which gives the sibling its own file.
    """

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    # Not the lock file: a hard link would make the two runs share one lock.
    shutil.copytree(
        source,
        target,
        copy_function=link,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".lock"),
    )


def alpha_run_dir(run_dir: Path, alpha: float | Literal["auto"]) -> Path:
    """The sibling run directory of the run at `run_dir` where `persyn_with_alpha` runs
    the pipeline with `alpha` (`run-alphaauto` for the tuned one)."""
    suffix = alpha if alpha == "auto" else f"{alpha:g}"
    return run_dir.parent / f"{run_dir.name}-alpha{suffix}"


def persyn_with_alpha(alpha: float | Literal["auto"]) -> Callable[[BaselineContext], Choice]:
    def choose(ctx: BaselineContext) -> Choice:
        base = ctx.run
        sibling = alpha_run_dir(base.store.root, alpha)
        if not sibling.exists():
            _link_tree(base.store.root, sibling)
        cfg = base.cfg.model_copy(deep=True)
        cfg.rewards.alpha = alpha
        cfg.run_dir = str(sibling)
        variant = Run(cfg, RunArtifacts(sibling), base.executor)
        # its own config, not the linked copy of the base run's (which names the base run
        # and its alpha): `persyn inspect`, `report` and `tune` read the run from it
        variant.store.write_config(cfg)
        run_stage(variant, "export")
        return _dataset_choice(variant, ctx.prompt_ids)

    return choose


BASELINES: dict[str, Callable[[BaselineContext], Choice]] = {
    "persyn": persyn,
    "strong": strong,
    "family-strong": family_strong,
    "mix": mix,
    "car": car,
    "random": random_teacher,
    "oracle": oracle,
    "quality-only": persyn_with_alpha(0.0),
    "learnability-only": persyn_with_alpha(1.0),
    "persyn-tuned": persyn_with_alpha("auto"),
}


def build_dataset(name: str, ctx: BaselineContext) -> list[dict[str, Any]]:
    """The baseline's rows in the export's format (`messages`, `teacher`, `kind`, ...).

    Missing answers are generated through the run's cache; prompts whose chosen teacher
    failed (`failed_answer`: an error, or a cut answer it does not keep) are left out (and
    counted by the caller through the row count).
    """
    if name not in BASELINES:
        raise ConfigError(
            f"experiment.datasets: unknown dataset {name!r}; choose from {list(BASELINES)}"
        )
    run = ctx.run
    choice = BASELINES[name](ctx)
    by_teacher: dict[str, list[str]] = {}
    for pid, teacher in choice.items():
        by_teacher.setdefault(teacher, []).append(pid)
    for teacher, ids in by_teacher.items():
        generate_rows(run, run.cfg.teacher(teacher), ids, f"baseline {name}")
    by_id = run.prompts_by_id()
    logs = {t: run.store.generation_log(t) for t in by_teacher}
    fps = {t: teacher_fingerprint(run.cfg.teacher(t)) for t in by_teacher}
    rows = []
    for pid in ctx.prompt_ids:
        teacher = choice.get(pid)
        if teacher is None:
            continue
        gen = logs[teacher].get((pid, fps[teacher]))
        if gen is None or failed_answer(gen, run.cfg.teacher(teacher)):
            continue
        provenance = Provenance.of_answer(run.cfg.teacher(teacher), gen)
        answer = trained_text(gen, run.cfg.teacher(teacher))
        rows.append(dataset_row(by_id[pid], answer, teacher, name, provenance))
    return rows

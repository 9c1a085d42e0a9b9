"""Paired bootstrap confidence intervals for students evaluated on the same prompts.

A student's `score` is the mean over task kinds of its per-task accuracy (math accuracy,
IFEval strict), so the bootstrap resamples evaluation prompts with replacement and
recomputes that same statistic on each resample. Paired: every dataset is measured on the
same resampled prompts, so the interval of a difference reflects how the two students
differ prompt by prompt, not the spread of the prompts' difficulty (which both share).

With several training seeds (`experiment.seeds`) a dataset's score is the mean over its
seeds' students, and a second source of chance enters: which seeds were drawn. Seeds and
prompts are crossed (every seed's student answers every prompt), so each resample draws
the prompts with replacement and, independently, the seeds with replacement, and
recomputes the mean over the drawn seeds of each seed's score on the drawn prompts (the
bootstrap for crossed factors, Owen 2007, "The pigeonhole bootstrap"). The seed draws are
shared by the datasets with as many seeds, position by position, as the prompt draws are:
the i-th seed of every dataset is the same training seed. A single seed resamples prompts
only, exactly as before. Intervals are percentile intervals; draws are seeded, so a rerun
gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] prompt indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def task_mean(scores: np.ndarray, tasks: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over task kinds of each kind's mean score, for each row of `idx` (a resample;
    an `idx` of one row `arange(n)` gives the plain estimate). A kind a resample happens
    to miss is left out of that resample's mean, as `score` leaves out absent kinds."""
    per_task = []
    for kind in np.unique(tasks):
        member = tasks[idx] == kind
        count = member.sum(axis=1)
        total = np.where(member, scores[idx], 0.0).sum(axis=1)
        per_task.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return np.nanmean(np.stack(per_task), axis=0)


def seed_indices(n_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n_seeds] seed indices drawn with replacement, a stream apart from the
    prompts' (one seed: always itself)."""
    if n_seeds == 1:
        return np.zeros((resamples, 1), dtype=np.int64)
    return np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(resamples, n_seeds))


def seed_mean(
    scores: np.ndarray, tasks: np.ndarray, idx: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    """Per resample r: the mean over the drawn seeds `seeds[r]` of each seed's `task_mean`
    on the drawn prompts `idx[r]`; `scores` is [seeds, prompts]."""
    per_seed = np.stack([task_mean(s, tasks, idx) for s in scores])  # [seeds, resamples]
    return np.take_along_axis(per_seed, seeds.T, axis=0).mean(axis=0)


def _interval(point: float, draws: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def paired_bootstrap(
    scores: dict[str, np.ndarray],
    tasks: np.ndarray,
    reference: str,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """({dataset: its score with a CI}, {dataset: score - reference's score with a CI}).

    `scores[name]` holds one score per evaluation prompt, in the same prompt order for
    every dataset, either for one student ([prompts]) or for one student per training seed
    ([seeds, prompts]; the score is the mean over seeds); `tasks` the prompts' task kinds
    (any labels). The differences are empty when `reference` is not among the datasets.
    """
    n = len(tasks)
    whole = np.arange(n)[None, :]
    idx = resample_indices(n, resamples, seed)
    per_seed = {name: np.atleast_2d(s) for name, s in scores.items()}
    seed_draws = {k: seed_indices(k, resamples, seed) for k in {len(s) for s in per_seed.values()}}
    means = {
        name: (
            float(np.mean([task_mean(row, tasks, whole)[0] for row in s])),
            seed_mean(s, tasks, idx, seed_draws[len(s)]),
        )
        for name, s in per_seed.items()
    }
    own = {name: _interval(point, draws, level) for name, (point, draws) in means.items()}
    if reference not in means:
        return own, {}
    ref_point, ref_draws = means[reference]
    diffs = {
        name: _interval(point - ref_point, draws - ref_draws, level)
        for name, (point, draws) in means.items()
    }
    return own, diffs

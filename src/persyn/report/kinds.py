"""The report's figures split by prompt kind (math, instruction, ...): which teacher each
kind went to and how well it was answered. A pool can suit one kind and not another; the
overall shares hide it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from persyn.report.data import ReportData


def _shares(teachers: list[str], chosen: list[str | None]) -> dict[str, float | None]:
    counts = Counter(chosen)
    return {t: counts[t] / len(chosen) if chosen else None for t in teachers}


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def kind_figures(art: ReportData) -> dict[str, dict[str, Any]]:
    """Per prompt kind: its calibration and routed prompts and dataset rows; the share of
    each teacher among the oracle's choices (calibration), the router's (routed prompts)
    and the dataset's rows; each teacher's mean combined reward and the oracle's mean
    reward on the kind's calibration prompts."""
    kind_of = {pid: row["kind"] for pid, row in art.prompts.items()}
    teachers = art.teachers
    kinds = sorted(set(kind_of.values()))
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        rows = [i for i, pid in enumerate(art.rewards.ids) if kind_of.get(pid) == kind]
        reward = art.rewards.reward[rows] if rows else np.empty((0, len(teachers)))
        routed = [r["teacher"] for r in art.routes if kind_of.get(r["prompt_id"]) == kind]
        dataset = [r["teacher"] for r in art.dataset if r["kind"] == kind]
        best = np.where(np.isfinite(reward), reward, -np.inf).max(axis=1)  # the oracle's
        out[kind] = {
            "calibration_prompts": len(rows),
            "routed_prompts": len(routed),
            "dataset_rows": len(dataset),
            "oracle_share": _shares(teachers, [art.rewards.oracle[i] for i in rows]),
            "router_share": _shares(teachers, routed),
            "dataset_share": _shares(teachers, dataset),
            "reward_mean": {t: _mean(reward[:, j]) for j, t in enumerate(teachers)},
            "oracle_reward": _mean(best),
        }
    return out

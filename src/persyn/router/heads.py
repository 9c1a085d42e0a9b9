"""Bradley-Terry heads over fixed prompt features: one score per teacher.

The head is linear (the paper's head), a small MLP (`hidden_size > 0`), or a RouteLLM-style
matrix factorisation (`mf`): score(x, t) = w . (normalise(v_t) * P x).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persyn.config import RouterConfig
from persyn.method import EpochCallback, RouterData, fit_bradley_terry, predict
from persyn.router.bradley_terry import fit_settings

if TYPE_CHECKING:
    import torch

HeadKind = Literal["linear", "mf"]


def build_head(kind: HeadKind, in_dim: int, n_teachers: int, cfg: RouterConfig) -> torch.nn.Module:
    """A freshly initialised head (seeded: the same config gives the same start)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    if kind == "linear" and cfg.hidden_size == 0:
        return nn.Linear(in_dim, n_teachers)
    if kind == "linear":
        return nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_size), nn.GELU(), nn.Linear(cfg.hidden_size, n_teachers)
        )

    class MatrixFactorisationHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.teacher_factors = nn.Embedding(n_teachers, cfg.mf_dim)
            self.project = nn.Linear(in_dim, cfg.mf_dim, bias=False)
            self.classify = nn.Linear(cfg.mf_dim, 1, bias=False)

        def forward(self, x: Any) -> Any:
            teacher = F.normalize(self.teacher_factors.weight, dim=-1)
            return self.classify(self.project(x)[:, None, :] * teacher[None]).squeeze(-1)

    return MatrixFactorisationHead()


def _as_tensor(features: np.ndarray) -> torch.Tensor:
    import torch

    return torch.as_tensor(features, dtype=torch.float32)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread for a while. A head's steps are small matrix products (a few
    thousand rows x 384 x teachers): threads save little on them, and when the cores are
    shared they wait on each other (epochs ~10x slower on 2 busy cores, measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_head(
    head: torch.nn.Module,
    data: RouterData,
    cfg: RouterConfig,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train `head` on features [prompts, dim] (`data.prompts`) with random batches of
    `cfg.batch_pairs` pairs; returns the training stats of `fit_bradley_terry`.

    Heads stay on the CPU whatever `device` says: they are a few small matrix products per
    step, which a GPU's launch overhead would make slower; their encoder follows `device`."""
    settings = fit_settings(cfg, cfg.epochs, cfg.learning_rate, cfg.batch_pairs, by="pairs")
    with _one_thread():
        return fit_bradley_terry(head, data.map(_as_tensor), settings, on_epoch)


def head_scores(head: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """[prompts, teachers] scores of features [prompts, dim]."""
    return predict(head, _as_tensor(features))

"""Bradley-Terry routers' glue around `persyn.method`: their fit settings from the config,
and checkpoints of the tensors training changed.

The pairs, the loss and the training loop themselves are `persyn.method`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from persyn.config import RouterConfig
from persyn.method import FitSettings, trained_state

if TYPE_CHECKING:
    import torch


def fit_settings(
    cfg: RouterConfig,
    epochs: int,
    learning_rate: float,
    batch: int,
    by: Literal["pairs", "prompts"],
) -> FitSettings:
    """`cfg`'s pair rule, regularisation, patience and seed with a router kind's schedule
    (a head's `epochs`/`batch_pairs`, or the language model's `lm.*`)."""
    return FitSettings(
        epochs=epochs,
        learning_rate=learning_rate,
        batch=batch,
        by=by,
        weight_decay=cfg.weight_decay,
        patience=cfg.patience,
        seed=cfg.seed,
        tie_margin=cfg.tie_margin,
        ties=cfg.ties,
    )


def save_trained(module: torch.nn.Module, path: Path) -> None:
    """Write the trained tensors (a frozen backbone is rebuilt from its config instead)."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(trained_state(module), tmp)
    tmp.replace(path)


def load_trained(module: torch.nn.Module, path: Path) -> None:
    """Load what `save_trained` wrote; RuntimeError when the tensors do not fit `module`."""
    import torch

    # On the CPU first: `load_state_dict` copies onto the module's device, wherever it ran.
    state = torch.load(path, weights_only=True, map_location="cpu")
    expected = {n for n, p in module.named_parameters() if p.requires_grad}
    misfits = sorted(set(state) ^ expected)
    if misfits:
        raise RuntimeError(f"{path.name}: {len(misfits)} tensors do not fit (first: {misfits[0]})")
    module.load_state_dict(state, strict=False)

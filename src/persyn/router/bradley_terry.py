"""The Bradley-Terry router: one score per teacher, trained on reward-ordered pairs.

For a prompt x and teachers (a, b) with r_b > r_a, P(b beats a | x) = sigmoid(pi_b - pi_a);
training minimises the binary cross-entropy -log sigmoid(pi_b(x) - pi_a(x)) over all such
pairs of every calibration prompt. Pairs closer than `tie_margin` are ties: skipped, or
(`ties: half`) trained towards P = 0.5. Inference is one forward pass: argmax pi(x).

The head over fixed prompt features is linear (the paper's head), a small MLP, or a
RouteLLM-style matrix factorisation (`mf`): score(x, t) = w . (normalise(v_t) * P x).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from persyn.config import ConfigError, RouterConfig

HeadKind = Literal["linear", "mf"]


def preference_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, winner, loser) for every teacher pair whose rewards differ."""
    return _pairs(reward, tie_margin)[0]


def tied_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, a, b) for every teacher pair within `tie_margin` (both rewards known)."""
    return _pairs(reward, tie_margin)[1]


def _pairs(reward: np.ndarray, tie_margin: float) -> tuple[np.ndarray, np.ndarray]:
    ordered, ties = [], []
    n_prompts, n_teachers = reward.shape
    for p in range(n_prompts):
        for a in range(n_teachers):
            for b in range(a + 1, n_teachers):
                ra, rb = reward[p, a], reward[p, b]
                if np.isnan(ra) or np.isnan(rb):
                    continue
                if abs(ra - rb) <= tie_margin:
                    ties.append((p, a, b))
                else:
                    ordered.append((p, b, a) if rb > ra else (p, a, b))
    as_rows = lambda rows: np.array(rows, dtype=np.int64).reshape(-1, 3)  # noqa: E731
    return as_rows(ordered), as_rows(ties)


def training_pairs(
    reward: np.ndarray, tie_margin: float, ties: Literal["skip", "half"] = "skip"
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, targets): ordered pairs with target 1, plus ties with target 0.5 if asked."""
    ordered, tied = _pairs(reward, tie_margin)
    if ties == "skip" or len(tied) == 0:
        return ordered, np.ones(len(ordered), dtype=np.float32)
    targets = np.concatenate([np.ones(len(ordered)), np.full(len(tied), 0.5)]).astype(np.float32)
    return np.concatenate([ordered, tied]), targets


def bradley_terry_loss(scores: Any, pairs: Any, targets: Any = None) -> Any:
    """Mean BCE of sigmoid(pi_first - pi_second) against `targets` (default 1: first wins).

    `scores` is a torch tensor [prompts, teachers]; `pairs` rows (prompt, first, second).
    """
    import torch.nn.functional as F

    margin = scores[pairs[:, 0], pairs[:, 1]] - scores[pairs[:, 0], pairs[:, 2]]
    if targets is None:
        return -F.logsigmoid(margin).mean()
    return F.binary_cross_entropy_with_logits(margin, targets)


def build_mf_head(in_dim: int, n_teachers: int, dim: int) -> Any:
    """RouteLLM's matrix factorisation: score(x, t) = w . (normalise(v_t) * P x)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class MatrixFactorisationHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.teacher_factors = nn.Embedding(n_teachers, dim)
            self.project = nn.Linear(in_dim, dim, bias=False)
            self.classify = nn.Linear(dim, 1, bias=False)

        def forward(self, x: Any) -> Any:
            teacher = F.normalize(self.teacher_factors.weight, dim=-1)
            return self.classify(self.project(x)[:, None, :] * teacher[None]).squeeze(-1)

    return MatrixFactorisationHead()


def build_head(in_dim: int, n_teachers: int, hidden: int) -> Any:
    import torch.nn as nn

    if hidden == 0:
        return nn.Linear(in_dim, n_teachers)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, n_teachers))


def trained_state(module: Any) -> dict[str, Any]:
    """Copies of the tensors training changes (e.g. LoRA adapters and the head only)."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k in names}


class BestState:
    """Keeps the trained tensors of the epoch with the lowest validation loss; early stopping."""

    def __init__(self, module: Any, patience: int | None, trainable_only: bool = False) -> None:
        self.module = module
        self.patience = patience
        self.trainable_only = trainable_only
        self.loss = float("inf")
        self.epoch = 0
        self.state = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        if self.trainable_only:  # a frozen backbone need not be copied every epoch
            return trained_state(self.module)
        return copy.deepcopy(self.module.state_dict())

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when training should stop."""
        if val_loss < self.loss - 1e-6:
            self.loss, self.epoch = val_loss, epoch
            self.state = self._snapshot()
        return self.patience is not None and epoch - self.epoch >= self.patience

    def restore(self) -> None:
        self.module.load_state_dict(self.state, strict=not self.trainable_only)


class BradleyTerryRouter:
    """A head over fixed prompt features; `scores(features) -> [prompts, teachers]`."""

    def __init__(
        self, teachers: list[str], in_dim: int, cfg: RouterConfig, head: HeadKind = "linear"
    ) -> None:
        import torch

        torch.manual_seed(cfg.seed)
        self.teachers = list(teachers)
        self.cfg = cfg
        self.in_dim = in_dim
        self.head_kind = head
        if head == "mf":
            self.head = build_mf_head(in_dim, len(teachers), cfg.mf_dim)
        else:
            self.head = build_head(in_dim, len(teachers), cfg.hidden_size)

    def scores(self, features: np.ndarray) -> np.ndarray:
        import torch

        self.head.eval()
        with torch.inference_mode():
            return self.head(torch.as_tensor(features, dtype=torch.float32)).numpy()

    def fit(
        self,
        features: np.ndarray,
        reward: np.ndarray,
        val_features: np.ndarray | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        """AdamW on batches of pairs; keeps the epoch with the lowest validation loss.

        `on_epoch` receives each epoch's losses as it ends (progress bars)."""
        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        x = torch.as_tensor(features, dtype=torch.float32)
        pairs_np, targets_np = training_pairs(reward, cfg.tie_margin, cfg.ties)
        if len(preference_pairs(reward, cfg.tie_margin)) == 0:
            raise ValueError("no teacher pair has different rewards: nothing to learn from")
        pairs, targets = torch.as_tensor(pairs_np), torch.as_tensor(targets_np)
        has_val = val_features is not None and val_reward is not None and len(val_features)
        if has_val:
            vx = torch.as_tensor(val_features, dtype=torch.float32)
            vp, vt = training_pairs(val_reward, cfg.tie_margin, cfg.ties)
            vpairs, vtargets = torch.as_tensor(vp), torch.as_tensor(vt)
            has_val = len(vpairs) > 0
        opt = torch.optim.AdamW(
            self.head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        best = BestState(self.head, cfg.patience)
        history = []
        for epoch in range(cfg.epochs):
            self.head.train()
            perm = torch.randperm(len(pairs), generator=gen)
            for start in range(0, len(pairs), cfg.batch_pairs):
                batch = perm[start : start + cfg.batch_pairs]
                loss = bradley_terry_loss(self.head(x), pairs[batch], targets[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.head.eval()
            with torch.no_grad():
                train_loss = float(bradley_terry_loss(self.head(x), pairs, targets))
                val_loss = (
                    float(bradley_terry_loss(self.head(vx), vpairs, vtargets))
                    if has_val
                    else train_loss
                )
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            if on_epoch is not None:
                on_epoch(history[-1])
            if best.update(epoch, val_loss):
                break
        best.restore()
        return {
            "pairs": len(pairs),
            "best_epoch": best.epoch,
            "best_val_loss": best.loss,
            "history": history,
        }

    def save(self, folder: Path, backbone: str) -> None:
        import torch

        from persyn.store import atomic_write_json

        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), folder / "head.pt.tmp")
        (folder / "head.pt.tmp").replace(folder / "head.pt")
        atomic_write_json(
            folder / "router.json",
            {
                "teachers": self.teachers,
                "in_dim": self.in_dim,
                "backbone": backbone,
                "head": self.head_kind,
                "config": self.cfg.model_dump(mode="json"),
            },
        )

    @classmethod
    def load(cls, folder: Path, teachers: list[str] | None = None) -> BradleyTerryRouter:
        import torch

        meta = read_checkpoint_meta(folder, teachers)
        router = cls(
            meta["teachers"],
            meta["in_dim"],
            RouterConfig(**meta["config"]),
            meta.get("head", "linear"),
        )
        router.head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
        return router


def read_checkpoint_meta(folder: Path, teachers: list[str] | None) -> dict[str, Any]:
    """`router.json` of a checkpoint; refuses a checkpoint trained for another teacher pool."""
    path = folder / "router.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no router checkpoint; train one first (persyn train-router)")
    meta = json.loads(path.read_text())
    if teachers is not None and meta["teachers"] != list(teachers):
        raise ConfigError(
            f"{folder}: router was trained for teachers {meta['teachers']}, "
            f"the config has {list(teachers)}; retrain it (persyn train-router)"
        )
    return meta

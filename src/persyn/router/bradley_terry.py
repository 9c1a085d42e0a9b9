"""The Bradley-Terry router: one score per teacher, trained on reward-ordered pairs.

For a prompt x and teachers (a, b) with r_b > r_a, P(b beats a | x) = sigmoid(pi_b - pi_a);
training minimises the binary cross-entropy -log sigmoid(pi_b(x) - pi_a(x)) over all such
pairs of every calibration prompt. Pairs closer than `tie_margin` are ties and skipped.
Inference is one forward pass: the teacher is argmax pi(x).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from persyn.config import ConfigError, RouterConfig


def preference_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, winner, loser) for every teacher pair whose rewards differ."""
    rows = []
    n_prompts, n_teachers = reward.shape
    for p in range(n_prompts):
        for a in range(n_teachers):
            for b in range(a + 1, n_teachers):
                ra, rb = reward[p, a], reward[p, b]
                if np.isnan(ra) or np.isnan(rb) or abs(ra - rb) <= tie_margin:
                    continue
                rows.append((p, b, a) if rb > ra else (p, a, b))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def bradley_terry_loss(scores: Any, pairs: Any) -> Any:
    """Mean -log sigmoid(pi_winner - pi_loser); `scores` [prompts, teachers] (torch)."""
    import torch.nn.functional as F

    margin = scores[pairs[:, 0], pairs[:, 1]] - scores[pairs[:, 0], pairs[:, 2]]
    return -F.logsigmoid(margin).mean()


def build_head(in_dim: int, n_teachers: int, hidden: int) -> Any:
    import torch.nn as nn

    if hidden == 0:
        return nn.Linear(in_dim, n_teachers)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, n_teachers))


class BradleyTerryRouter:
    """A head over fixed prompt features; `scores(features) -> [prompts, teachers]`."""

    def __init__(self, teachers: list[str], in_dim: int, cfg: RouterConfig) -> None:
        import torch

        torch.manual_seed(cfg.seed)
        self.teachers = list(teachers)
        self.cfg = cfg
        self.in_dim = in_dim
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
    ) -> dict[str, Any]:
        """Full-batch-ish Adam on all pairs; keeps the epoch with the lowest validation loss."""
        import copy

        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        x = torch.as_tensor(features, dtype=torch.float32)
        pairs = torch.as_tensor(preference_pairs(reward, cfg.tie_margin))
        if len(pairs) == 0:
            raise ValueError("no teacher pair has different rewards: nothing to learn from")
        has_val = val_features is not None and val_reward is not None and len(val_features)
        if has_val:
            vx = torch.as_tensor(val_features, dtype=torch.float32)
            vpairs = torch.as_tensor(preference_pairs(val_reward, cfg.tie_margin))
            has_val = len(vpairs) > 0
        opt = torch.optim.AdamW(
            self.head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        best = (float("inf"), 0, copy.deepcopy(self.head.state_dict()))
        history = []
        for epoch in range(cfg.epochs):
            self.head.train()
            perm = torch.randperm(len(pairs), generator=gen)
            for start in range(0, len(pairs), cfg.batch_pairs):
                batch = pairs[perm[start : start + cfg.batch_pairs]]
                loss = bradley_terry_loss(self.head(x), batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.head.eval()
            with torch.no_grad():
                train_loss = float(bradley_terry_loss(self.head(x), pairs))
                val_loss = float(bradley_terry_loss(self.head(vx), vpairs)) if has_val else train_loss
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            if val_loss < best[0] - 1e-6:
                best = (val_loss, epoch, copy.deepcopy(self.head.state_dict()))
        self.head.load_state_dict(best[2])
        return {
            "pairs": len(pairs),
            "best_epoch": best[1],
            "best_val_loss": best[0],
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
            {"teachers": self.teachers, "in_dim": self.in_dim, "backbone": backbone,
             "config": self.cfg.model_dump(mode="json")},
        )

    @classmethod
    def load(cls, folder: Path, teachers: list[str] | None = None) -> BradleyTerryRouter:
        import torch

        meta = json.loads((folder / "router.json").read_text())
        if teachers is not None and meta["teachers"] != list(teachers):
            raise ConfigError(
                f"{folder}: router was trained for teachers {meta['teachers']}, "
                f"the config has {list(teachers)}; retrain it (persyn train-router)"
            )
        router = cls(meta["teachers"], meta["in_dim"], RouterConfig(**meta["config"]))
        router.head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
        return router

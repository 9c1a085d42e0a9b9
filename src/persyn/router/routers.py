"""The router registry: one small class per router, one interface.

Every router maps prompt texts to one score per teacher, `scores(prompts) -> array
[prompts, teachers]` (higher is better; a policy in `persyn.policies` turns scores into
choices), learns from calibration rewards with `fit`, and saves a checkpoint that carries
the teacher names, so loading it for a different pool fails with a clear error.

    bradley-terry     frozen sentence encoder + Bradley-Terry head (linear/MLP); default
    mf                frozen encoder + RouteLLM-style matrix factorisation, Bradley-Terry loss
    knn               mean reward of the k nearest calibration prompts (cosine, frozen encoder)
    lm-bradley-terry  the paper: a language model with a per-teacher linear head, LoRA or full
    best-fixed        the teacher with the best mean calibration reward, for every prompt
    random            a uniformly random teacher per prompt
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from persyn.config import RouterConfig
from persyn.router.bradley_terry import BradleyTerryRouter, HeadKind, read_checkpoint_meta
from persyn.router.encoder import PromptEncoder
from persyn.store import atomic_write_json


class Router(ABC):
    """Scores teachers for prompts. Subclasses implement `fit` and `scores`."""

    name: ClassVar[str]

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        """`encoder`: a frozen encoder shared between routers; routers without one ignore it."""
        self.teachers = list(teachers)
        self.cfg = cfg

    @abstractmethod
    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        """Learn from rewards [prompts, teachers] (NaN: missing); returns training stats.

        `on_epoch` receives each epoch's losses as it ends (progress bars)."""

    @abstractmethod
    def scores(self, prompts: list[str]) -> np.ndarray:
        """[prompts, teachers] scores; the router's choice is the row's argmax."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder)
        atomic_write_json(
            folder / "router.json",
            {
                "router": self.name,
                "teachers": self.teachers,
                "config": self.cfg.model_dump(mode="json"),
                **self.checkpoint_meta(),
            },
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        """Extra `router.json` fields the weights need to load."""
        return {}

    @abstractmethod
    def save_weights(self, folder: Path) -> None: ...

    @abstractmethod
    def load_weights(self, folder: Path, meta: dict[str, Any]) -> None: ...

    @staticmethod
    def load(
        folder: Path, teachers: list[str] | None = None, encoder: PromptEncoder | None = None
    ) -> Router:
        """The router saved in `folder`; refuses one trained for another teacher pool."""
        meta = read_checkpoint_meta(folder, teachers)
        # Checkpoints written before the registry existed are Bradley-Terry heads.
        router = make_router(
            RouterConfig(**{**meta["config"], "kind": meta.get("router", "bradley-terry")}),
            meta["teachers"],
            encoder,
        )
        router.load_weights(folder, meta)
        return router


class EncoderRouter(Router):
    """Routers over features of a frozen sentence encoder (shared between routers in eval)."""

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        super().__init__(teachers, cfg, encoder)
        self.encoder = encoder or PromptEncoder(cfg.backbone, cfg.embed_batch_size)

    def features(self, prompts: list[str]) -> np.ndarray:
        return self.encoder.encode(prompts)


class BradleyTerryHeadRouter(EncoderRouter):
    name = "bradley-terry"
    head: ClassVar[HeadKind] = "linear"

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        super().__init__(teachers, cfg, encoder)
        self.model: BradleyTerryRouter | None = None

    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        self.model = BradleyTerryRouter(self.teachers, self.encoder.dim, self.cfg, self.head)
        if not val_prompts:
            return self.model.fit(self.features(prompts), reward, on_epoch=on_epoch)
        return self.model.fit(
            self.features(prompts), reward, self.features(val_prompts), val_reward, on_epoch
        )

    def scores(self, prompts: list[str]) -> np.ndarray:
        assert self.model is not None, "fit or load the router first"
        return self.model.scores(self.features(prompts))

    def checkpoint_meta(self) -> dict[str, Any]:
        assert self.model is not None
        return {"in_dim": self.model.in_dim, "backbone": self.cfg.backbone, "head": self.head}

    def save_weights(self, folder: Path) -> None:
        assert self.model is not None, "fit the router first"
        self.model.save(folder, self.cfg.backbone)

    def load_weights(self, folder: Path, meta: dict[str, Any]) -> None:
        self.model = BradleyTerryRouter.load(folder, self.teachers)


class MatrixFactorisationRouter(BradleyTerryHeadRouter):
    name = "mf"
    head: ClassVar[HeadKind] = "mf"


class NearestNeighbourRouter(EncoderRouter):
    """Score = mean reward of the `knn_k` most similar calibration prompts (cosine)."""

    name = "knn"

    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        self.memory = self.features(prompts)
        self.reward = np.asarray(reward, dtype=float)
        return {"pairs": 0, "prompts": len(prompts)}

    def scores(self, prompts: list[str]) -> np.ndarray:
        similarity = self.features(prompts) @ self.memory.T
        k = min(self.cfg.knn_k, len(self.memory))
        nearest = np.argsort(-similarity, axis=1)[:, :k]
        neighbour_reward = self.reward[nearest]  # [prompts, k, teachers]
        # A teacher whose neighbours all failed scores its overall mean instead of NaN.
        fallback = np.nanmean(self.reward, axis=0)
        with np.errstate(all="ignore"):
            mean = np.nanmean(neighbour_reward, axis=1) if k else np.full_like(similarity, np.nan)
        return np.where(np.isnan(mean), fallback, mean)

    def save_weights(self, folder: Path) -> None:
        np.savez(folder / "knn.npz", memory=self.memory, reward=self.reward)

    def load_weights(self, folder: Path, meta: dict[str, Any]) -> None:
        data = np.load(folder / "knn.npz")
        self.memory, self.reward = data["memory"], data["reward"]


class LanguageModelRouter(Router):
    """The paper's design: the backbone LM with a linear head, fine-tuned (LoRA or full)."""

    name = "lm-bradley-terry"

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        from persyn.router.lm import LMScorer

        super().__init__(teachers, cfg)
        self.model = LMScorer(teachers, cfg)

    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        return self.model.fit(prompts, reward, val_prompts, val_reward, on_epoch)

    def scores(self, prompts: list[str]) -> np.ndarray:
        return self.model.scores(prompts)

    def save_weights(self, folder: Path) -> None:
        self.model.save(folder)

    def load_weights(self, folder: Path, meta: dict[str, Any]) -> None:
        self.model.load_weights(folder)


class BestFixedRouter(Router):
    """Every prompt to the teacher with the best mean calibration reward (a baseline)."""

    name = "best-fixed"

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        super().__init__(teachers, cfg)
        self.mean_reward = np.zeros(len(teachers))

    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        self.mean_reward = np.nan_to_num(np.nanmean(reward, axis=0), nan=-np.inf)
        return {"pairs": 0, "prompts": len(prompts)}

    def scores(self, prompts: list[str]) -> np.ndarray:
        return np.tile(self.mean_reward, (len(prompts), 1))

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"mean_reward": self.mean_reward.tolist()}

    def save_weights(self, folder: Path) -> None:
        """The mean rewards live in `router.json`."""

    def load_weights(self, folder: Path, meta: dict[str, Any]) -> None:
        self.mean_reward = np.asarray(meta["mean_reward"], dtype=float)


class RandomRouter(Router):
    """A uniformly random teacher per prompt; the same prompts get the same draw (seeded)."""

    name = "random"

    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        return {"pairs": 0, "prompts": len(prompts)}

    def scores(self, prompts: list[str]) -> np.ndarray:
        return np.random.default_rng(self.cfg.seed).random((len(prompts), len(self.teachers)))

    def save_weights(self, folder: Path) -> None:
        """Nothing to save beyond the seed in `router.json`."""

    def load_weights(self, folder: Path, meta: dict[str, Any]) -> None:
        """Nothing to load."""


ROUTERS: dict[str, type[Router]] = {
    r.name: r
    for r in (
        BradleyTerryHeadRouter,
        MatrixFactorisationRouter,
        NearestNeighbourRouter,
        LanguageModelRouter,
        BestFixedRouter,
        RandomRouter,
    )
}


def make_router(
    cfg: RouterConfig, teachers: list[str], encoder: PromptEncoder | None = None
) -> Router:
    """The router `cfg.kind` names; encoder routers reuse `encoder` when given."""
    return ROUTERS[cfg.kind](teachers, cfg, encoder)

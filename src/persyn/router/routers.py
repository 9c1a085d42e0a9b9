"""The router registry: one small class per router, one interface.

Every router maps prompt texts to one score per teacher, `scores(prompts) -> array
[prompts, teachers]` (higher is better; a policy in `persyn.policies` turns scores into
choices). `fit` learns from calibration rewards through the `learn` hook, and `save` writes
a checkpoint that carries the teacher names, so loading it for a different pool fails with
a clear error.

    bradley-terry     frozen sentence encoder + Bradley-Terry head (linear/MLP); default
    mf                frozen encoder + RouteLLM-style matrix factorisation, Bradley-Terry loss
    knn               mean reward of the k nearest calibration prompts (cosine, frozen encoder)
    lm-bradley-terry  the paper: a language model with a per-teacher linear head, LoRA or full
                      (its novelty in its own pooled hidden states)
    best-fixed        the teacher with the best mean calibration reward, for every prompt
    random            a uniformly random teacher per prompt
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from persyn.artifacts import NoveltyReference, RouterCheckpoint
from persyn.config import ConfigError, RouterConfig
from persyn.method import (
    EpochCallback,
    RouterData,
    charge_failures,
    fit_bradley_terry,
    novelty,
    predict,
)
from persyn.registry import Registry
from persyn.router.bradley_terry import fit_settings, load_trained, save_trained
from persyn.router.encoder import PromptEncoder
from persyn.router.heads import HeadKind, build_head, fit_head, head_scores

if TYPE_CHECKING:
    import torch


class Router(ABC):
    """Scores teachers for prompts. Subclasses implement `scores`; learnt ones `learn`, and
    `save_state`/`load_state` for what they learnt."""

    name: ClassVar[str]  # its registry key (`router.kind`), saved in its checkpoint
    #: it holds a model (an encoder, an LM) while scoring: a Ray replica gets GPUs
    loads_model: ClassVar[bool] = True
    #: it has an encoder space (`embeddings`), so its routed prompts get a novelty
    embeds: ClassVar[bool] = False

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        """`encoder`: a frozen encoder shared between routers; routers without one ignore it."""
        self.teachers = list(teachers)
        self.cfg = cfg
        # the calibration prompts novelty is measured against (`Router.load` reads it)
        self.novelty_reference: NoveltyReference | None = None

    @abstractmethod
    def scores(self, prompts: list[str]) -> np.ndarray:
        """[prompts, teachers] scores; the router's choice is the row's argmax."""

    def embeddings(self, prompts: list[str]) -> np.ndarray | None:
        """[prompts, dim] the prompts in the router's encoder space; None for a router
        without one (its prompts get no novelty)."""
        return None

    def frozen_encoder(self) -> PromptEncoder | None:
        """The frozen encoder whose space `embeddings` are in, if any: another router over
        the same encoder can take it (and its memo of encoded prompts) instead of loading
        it again."""
        return None

    def novelty(self, prompts: list[str]) -> np.ndarray:
        """[prompts] mean cosine distance to the nearest calibration prompts
        (`persyn.method.novelty`); NaN where the router has no encoder space or reference."""
        reference = self.novelty_reference
        features = self.embeddings(prompts) if reference is not None else None
        if reference is None or features is None:
            return np.full(len(prompts), np.nan)
        return novelty(features, reference.embeddings, reference.k)

    def fit(
        self,
        prompts: list[str],
        reward: np.ndarray,
        val_prompts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: EpochCallback | None = None,
        failure_reward: float = 0.0,
    ) -> dict[str, Any]:
        """Learn from rewards [prompts, teachers] (NaN: missing, -inf: the answer failed),
        with held-out prompts for early stopping; `failure_reward` is what routers that
        average rewards charge a failed answer (the bottom of the normalisation's scale).
        Returns training stats: "pairs", "best_epoch", "history" (per epoch losses, also
        passed to `on_epoch` as each epoch ends) and router-specific ones."""
        data = RouterData(prompts, reward, val_prompts, val_reward, failure_reward)
        stats = self.learn(data, on_epoch)
        return {"pairs": 0, "best_epoch": None, "history": [], **stats}

    def learn(self, data: RouterData, on_epoch: EpochCallback | None) -> dict[str, Any]:
        """What `fit` does; a router with nothing to learn keeps this."""
        return {}

    def save_state(self, folder: Path) -> dict[str, Any]:
        """Write what `learn` learnt into `folder`; returns extra `router.json` fields."""
        return {}

    def load_state(self, folder: Path, meta: dict[str, Any]) -> None:  # noqa: B027 (optional)
        """Read back what `save_state` wrote (`meta`: the `router.json` fields)."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        state = self.save_state(folder)  # before `router.json`, which marks a whole checkpoint
        meta = {
            "router": self.name,
            "teachers": self.teachers,
            "config": self.cfg.model_dump(mode="json"),
        }
        RouterCheckpoint(folder).write_meta({**meta, **state})

    @staticmethod
    def load(
        folder: Path, teachers: list[str] | None = None, encoder: PromptEncoder | None = None
    ) -> Router:
        """The router saved in `folder`. Refuses, in one line, a checkpoint trained for
        another teacher pool and one this version cannot read (e.g. an older format)."""
        checkpoint = RouterCheckpoint(folder)
        if not checkpoint.meta_path.is_file():
            raise ConfigError(
                f"{checkpoint.meta_path}: no router checkpoint; train one first "
                "(persyn train-router)"
            )
        try:
            meta = checkpoint.meta()
            router_class, saved = ROUTERS.load(meta["router"]), list(meta["teachers"])
            cfg = RouterConfig(**meta["config"])
        except (ValueError, KeyError, TypeError) as err:  # JSON and config errors are ValueErrors
            raise _unreadable(folder, err) from None
        if teachers is not None and saved != list(teachers):
            raise ConfigError(
                f"{folder}: router was trained for teachers {saved}, "
                f"the config has {list(teachers)}; retrain it (persyn train-router)"
            )
        router = router_class(saved, cfg, encoder)
        try:
            router.load_state(folder, meta)
            router.novelty_reference = checkpoint.novelty()
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise _unreadable(folder, err) from None
        return router


def _unreadable(folder: Path, err: Exception) -> ConfigError:
    lines = str(err).strip().splitlines()
    reason = f"missing or unknown {err}" if isinstance(err, KeyError) else (lines or [repr(err)])[0]
    return ConfigError(
        f"{folder}: cannot read this router checkpoint ({reason}); rerun `persyn train-router`"
    )


class EncoderRouter(Router):
    """Routers over features of a frozen sentence encoder (shared between routers in eval)."""

    embeds: ClassVar[bool] = True

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        super().__init__(teachers, cfg, encoder)
        self.encoder = encoder or PromptEncoder(cfg.backbone, cfg.embed_batch_size)

    def features(self, prompts: list[str]) -> np.ndarray:
        return self.encoder.encode(prompts)

    def embeddings(self, prompts: list[str]) -> np.ndarray | None:
        return self.features(prompts)  # memoised: scoring the same prompts encoded them

    def frozen_encoder(self) -> PromptEncoder | None:
        return self.encoder


class BradleyTerryRouter(EncoderRouter):
    """A Bradley-Terry head (linear, or an MLP with `hidden_size`) over encoder features."""

    name = "bradley-terry"
    head_kind: ClassVar[HeadKind] = "linear"
    head: torch.nn.Module

    def learn(self, data: RouterData, on_epoch: EpochCallback | None) -> dict[str, Any]:
        self.head = build_head(self.head_kind, self.encoder.dim, len(self.teachers), self.cfg)
        return fit_head(self.head, data.map(self.features), self.cfg, on_epoch)

    def scores(self, prompts: list[str]) -> np.ndarray:
        return head_scores(self.head, self.features(prompts))

    def save_state(self, folder: Path) -> dict[str, Any]:
        save_trained(self.head, folder / "head.pt")
        return {"in_dim": self.encoder.dim}

    def load_state(self, folder: Path, meta: dict[str, Any]) -> None:
        self.head = build_head(self.head_kind, meta["in_dim"], len(self.teachers), self.cfg)
        load_trained(self.head, folder / "head.pt")


class MatrixFactorisationRouter(BradleyTerryRouter):
    """RouteLLM's matrix factorisation over encoder features, with the Bradley-Terry loss."""

    name = "mf"
    head_kind: ClassVar[HeadKind] = "mf"


class NearestNeighbourRouter(EncoderRouter):
    """Score = mean reward of the `knn_k` most similar calibration prompts (cosine)."""

    name = "knn"

    def learn(self, data: RouterData, on_epoch: EpochCallback | None) -> dict[str, Any]:
        self.memory = self.features(data.prompts)
        self.reward = charge_failures(np.asarray(data.reward, dtype=float), data.failure_reward)
        return {}

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

    def save_state(self, folder: Path) -> dict[str, Any]:
        np.savez(folder / "knn.npz", memory=self.memory, reward=self.reward)
        return {}

    def load_state(self, folder: Path, meta: dict[str, Any]) -> None:
        data = np.load(folder / "knn.npz")
        self.memory, self.reward = data["memory"], data["reward"]


def _text_array(texts: list[str]) -> np.ndarray:
    """Texts that index like features (`texts[rows]`), for the shared training loop."""
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return array


class LanguageModelRouter(Router):
    """The paper's design: the backbone LM with a linear head, fine-tuned (LoRA or full).
    Its encoder space is its own, the pooled last hidden state of the fine-tuned backbone,
    or a frozen sentence encoder (`router.lm.novelty_encoder`; `encoder`, when it is that
    one, is shared)."""

    name = "lm-bradley-terry"
    embeds: ClassVar[bool] = True

    def __init__(
        self, teachers: list[str], cfg: RouterConfig, encoder: PromptEncoder | None = None
    ) -> None:
        from persyn.router.lm import build_scoring_model  # transformers, only when used

        super().__init__(teachers, cfg)
        self.model = build_scoring_model(cfg.backbone, len(teachers), cfg)
        # the last prompts embedded and their vectors: routing a chunk asks for its scores,
        # then its novelty, and the backbone (the costly part) runs once for both
        self._last: tuple[list[str], np.ndarray] | None = None
        self.novelty_encoder: PromptEncoder | None = None
        if cfg.lm.novelty_encoder is not None:
            shared = encoder is not None and encoder.backbone == cfg.lm.novelty_encoder
            self.novelty_encoder = (
                encoder if shared else PromptEncoder(cfg.lm.novelty_encoder, cfg.embed_batch_size)
            )

    def learn(self, data: RouterData, on_epoch: EpochCallback | None) -> dict[str, Any]:
        self._last = None  # vectors from before this training are stale
        lm = self.cfg.lm
        settings = fit_settings(self.cfg, lm.epochs, lm.learning_rate, lm.batch_size, by="prompts")
        return fit_bradley_terry(self.model, data.map(_text_array), settings, on_epoch)

    def embeddings(self, prompts: list[str]) -> np.ndarray | None:
        """The prompts in the space novelty is measured in: the `novelty_encoder`'s, or
        the vector the head reads (`hidden`), so novelty measures distance as the
        trained router sees prompts."""
        if self.novelty_encoder is not None:
            return self.novelty_encoder.encode(prompts)
        return self.hidden(prompts)

    def frozen_encoder(self) -> PromptEncoder | None:
        return self.novelty_encoder

    def hidden(self, prompts: list[str]) -> np.ndarray:
        """[prompts, hidden] the pooled last hidden state of the fine-tuned backbone."""
        if self._last is None or self._last[0] != prompts:
            model, batch = self.model, self.cfg.lm.batch_size
            vectors = predict(model, _text_array(prompts), batch, apply=model.embed)
            self._last = (list(prompts), vectors)
        return self._last[1]

    def scores(self, prompts: list[str]) -> np.ndarray:
        head = self.model.head
        return predict(head, head.weight.new_tensor(self.hidden(prompts)))

    def save_state(self, folder: Path) -> dict[str, Any]:
        save_trained(self.model, folder / "weights.pt")
        return {}

    def load_state(self, folder: Path, meta: dict[str, Any]) -> None:
        load_trained(self.model, folder / "weights.pt")


class BestFixedRouter(Router):
    """Every prompt to the teacher with the best mean calibration reward, failed answers
    charged (a baseline)."""

    name = "best-fixed"
    loads_model: ClassVar[bool] = False

    def learn(self, data: RouterData, on_epoch: EpochCallback | None) -> dict[str, Any]:
        charged = charge_failures(data.reward, data.failure_reward)
        self.mean_reward = np.nan_to_num(np.nanmean(charged, axis=0), nan=-np.inf)
        return {}

    def scores(self, prompts: list[str]) -> np.ndarray:
        return np.tile(self.mean_reward, (len(prompts), 1))

    def save_state(self, folder: Path) -> dict[str, Any]:
        return {"mean_reward": self.mean_reward.tolist()}

    def load_state(self, folder: Path, meta: dict[str, Any]) -> None:
        self.mean_reward = np.asarray(meta["mean_reward"], dtype=float)


class RandomRouter(Router):
    """A uniformly random teacher per prompt. The draw is a function of the seed and the
    prompt alone (a hash of its text), not of its position: the same prompt gets the same
    teacher in every batch, chunk and run."""

    name = "random"
    loads_model: ClassVar[bool] = False

    def scores(self, prompts: list[str]) -> np.ndarray:
        def draw(text: str) -> np.ndarray:
            digest = hashlib.sha256(f"{self.cfg.seed}:{text}".encode()).digest()
            return np.random.default_rng(list(digest)).random(len(self.teachers))

        return np.array([draw(p) for p in prompts]).reshape(len(prompts), len(self.teachers))


# Plug-ins join through the `persyn.routers` entry points.
ROUTERS: Registry[Router] = Registry(
    "persyn.routers",
    "router",
    Router,
    {
        r.name: r
        for r in (
            BradleyTerryRouter,
            MatrixFactorisationRouter,
            NearestNeighbourRouter,
            LanguageModelRouter,
            BestFixedRouter,
            RandomRouter,
        )
    },
)


def make_router(
    cfg: RouterConfig, teachers: list[str], encoder: PromptEncoder | None = None
) -> Router:
    """The router `cfg.kind` names; encoder routers reuse `encoder` when given."""
    return ROUTERS.load(cfg.kind)(teachers, cfg, encoder)

"""The paper's router: a Hugging Face language model with a linear head per teacher.

The backbone (any causal LM or encoder, loaded with `AutoModel`, i.e. without its LM head)
turns a prompt into one vector: the last real token for causal LMs (it has attended to the
whole prompt), the mean over tokens for bidirectional encoders. A linear layer maps it to
one score per teacher. Training fine-tunes the head and either LoRA adapters (peft) or the
whole backbone with the Bradley-Terry loss, a batch of prompts (with all their teacher
pairs) per step. Checkpoints keep only the trained tensors plus `router.json`; loading
rebuilds the backbone from the same config and loads them on top.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from persyn.config import ConfigError, RouterConfig
from persyn.models import resolve_model_path
from persyn.router.bradley_terry import (
    BestState,
    bradley_terry_loss,
    trained_state,
    training_pairs,
)


def _uses_last_token(model_config: Any, pooling: str) -> bool:
    if pooling != "auto":
        return pooling == "last"
    architectures = getattr(model_config, "architectures", None) or []
    return bool(getattr(model_config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") for a in architectures
    )


def build_scoring_model(backbone: str, n_teachers: int, cfg: RouterConfig) -> tuple[Any, Any]:
    """(module mapping tokenised prompts to [batch, teachers] scores, tokenizer)."""
    import torch
    import torch.nn as nn
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(cfg.seed)
    path = resolve_model_path(backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # last-token pooling indexes from the attention mask
    model = AutoModel.from_pretrained(path, dtype=torch.float32)
    last_token = _uses_last_token(model.config, cfg.lm.pooling)
    if cfg.lm.finetune == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ConfigError(
                "router.lm.finetune: lora needs peft (pip install persyn[train])"
            ) from None
        lora = LoraConfig(
            r=cfg.lm.lora_r,
            lora_alpha=cfg.lm.lora_alpha,
            lora_dropout=cfg.lm.lora_dropout,
            target_modules="all-linear",
        )
        model = get_peft_model(model, lora)

    class TeacherScorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model
            self.head = nn.Linear(model.config.hidden_size, n_teachers)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            hidden = hidden.last_hidden_state
            if last_token:
                last = attention_mask.sum(1) - 1
                pooled = hidden[torch.arange(len(hidden)), last]
            else:
                mask = attention_mask[..., None].to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.head(pooled)

    return TeacherScorer(), tokenizer


class LMScorer:
    """Training, scoring and checkpoints of a `TeacherScorer`."""

    def __init__(self, teachers: list[str], cfg: RouterConfig) -> None:
        self.teachers = list(teachers)
        self.cfg = cfg
        self.model, self.tokenizer = build_scoring_model(cfg.backbone, len(teachers), cfg)

    def _tokens(self, texts: list[str]) -> dict[str, Any]:
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg.lm.max_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def scores(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        import torch

        self.model.eval()
        size = batch_size or self.cfg.lm.batch_size
        out = [np.zeros((0, len(self.teachers)), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(texts), size):
                out.append(self.model(**self._tokens(texts[start : start + size])).numpy())
        return np.concatenate(out)

    def _loss(self, texts: list[str], reward: np.ndarray) -> float:
        import torch

        pairs, targets = training_pairs(reward, self.cfg.tie_margin, self.cfg.ties)
        if len(pairs) == 0:
            return float("nan")
        scores = torch.as_tensor(self.scores(texts))
        return float(bradley_terry_loss(scores, torch.as_tensor(pairs), torch.as_tensor(targets)))

    def fit(
        self,
        texts: list[str],
        reward: np.ndarray,
        val_texts: list[str] | None = None,
        val_reward: np.ndarray | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, Any]:
        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        pairs, targets = training_pairs(reward, cfg.tie_margin, cfg.ties)
        if not (targets == 1).any():
            raise ValueError("no teacher pair has different rewards: nothing to learn from")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=cfg.lm.learning_rate, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(cfg.seed)
        has_val = bool(val_texts) and val_reward is not None
        best = BestState(self.model, cfg.patience, trainable_only=True)
        history = []
        for epoch in range(cfg.lm.epochs):
            self.model.train()
            order = rng.permutation(len(texts))
            for start in range(0, len(order), cfg.lm.batch_size):
                chosen = order[start : start + cfg.lm.batch_size]
                # The pairs of the chosen prompts, re-indexed to rows of this batch.
                row_of = np.full(len(texts), -1)
                row_of[chosen] = np.arange(len(chosen))
                keep = row_of[pairs[:, 0]] >= 0
                if not keep.any():
                    continue
                batch_pairs = pairs[keep].copy()
                batch_pairs[:, 0] = row_of[batch_pairs[:, 0]]
                scores = self.model(**self._tokens([texts[i] for i in chosen]))
                loss = bradley_terry_loss(
                    scores, torch.as_tensor(batch_pairs), torch.as_tensor(targets[keep])
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
            train_loss = self._loss(texts, reward)
            val_loss = self._loss(val_texts, val_reward) if has_val else train_loss
            if np.isnan(val_loss):
                val_loss = train_loss
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            if on_epoch is not None:
                on_epoch(history[-1])
            if best.update(epoch, val_loss):
                break
        best.restore()
        return {"pairs": len(pairs), "best_epoch": best.epoch, "history": history}

    def save(self, folder: Path) -> None:
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "weights.pt.tmp"
        torch.save(trained_state(self.model), tmp)
        tmp.replace(folder / "weights.pt")

    def load_weights(self, folder: Path) -> None:
        import torch

        state = torch.load(folder / "weights.pt", weights_only=True)
        unexpected = self.model.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ConfigError(
                f"{folder}/weights.pt: {len(unexpected)} tensors do not fit the backbone "
                f"{self.cfg.backbone!r} (first: {unexpected[0]}); retrain the router"
            )

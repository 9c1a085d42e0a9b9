"""Prompt features from a frozen sentence encoder (mean-pooled, L2-normalised)."""

from __future__ import annotations

from typing import Any

import numpy as np

from persyn.models import resolve_model_path


class PromptEncoder:
    def __init__(self, backbone: str, batch_size: int = 64, max_length: int = 256) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(self.backbone)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()

    @property
    def dim(self) -> int:
        if self._model is None:
            self.load()
        return int(self._model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            self.load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

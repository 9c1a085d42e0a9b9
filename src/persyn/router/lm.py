"""The paper's router: a Hugging Face language model with a linear head per teacher.

The backbone (any causal LM or encoder, loaded with `AutoModel`, i.e. without its LM head)
turns a prompt into one vector: the last real token for causal LMs (it has attended to the
whole prompt), the mean over tokens for bidirectional encoders. A linear layer maps it to
one score per teacher; the same vector, after training, is the router's encoder space
(novelty). Training (`persyn.method.fit_bradley_terry`) fine-tunes
the head and either LoRA adapters (peft) or the whole backbone, a batch of prompts (with all
their teacher pairs) per step. Checkpoints keep only the trained tensors; loading rebuilds
the backbone from the same config and loads them on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from persyn.config import ConfigError, RouterConfig
from persyn.models import resolve_device, resolve_model_path

if TYPE_CHECKING:
    import torch


def _uses_last_token(model_config: Any, pooling: str) -> bool:
    if pooling != "auto":
        return pooling == "last"
    architectures = getattr(model_config, "architectures", None) or []
    return bool(getattr(model_config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") for a in architectures
    )


def build_scoring_model(backbone: str, n_teachers: int, cfg: RouterConfig) -> torch.nn.Module:
    """A module mapping a batch of prompt texts to [batch, teachers] scores."""
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

        def forward(self, texts: Sequence[str]) -> Any:
            return self.head(self.embed(texts))

        def embed(self, texts: Sequence[str]) -> Any:
            """[batch, hidden] the pooled last hidden state: the vector the head reads."""
            if len(texts) == 0:  # the tokenizer cannot pad an empty batch
                return self.head.weight.new_zeros((0, model.config.hidden_size))
            batch = tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=cfg.lm.max_length,
                return_tensors="pt",
            )
            batch = batch.to(self.head.weight.device)
            attention_mask = batch["attention_mask"]
            hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=attention_mask)
            hidden = hidden.last_hidden_state
            if last_token:
                last = attention_mask.sum(1) - 1
                pooled = hidden[torch.arange(len(hidden)), last]
            else:
                mask = attention_mask[..., None].to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return pooled

    # The backbone and head train and score on the run's device; batches follow them
    # (`forward`), scores come back to the CPU in `predict`.
    return TeacherScorer().to(resolve_device())

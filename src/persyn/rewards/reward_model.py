"""Quality from a Hugging Face reward model (the paper's instruction-data signal).

Any `AutoModelForSequenceClassification` with one output (`num_labels=1`), e.g.
Skywork-Reward-V2: the conversation (prompt messages + the response as the assistant turn)
goes through the reward model's own chat template, batches are length-bucketed under a
token budget.

Scale: a reward model's raw score is a Bradley-Terry logit on no fixed scale, while the
other signals live in [0, 1]. The value is `sigmoid(raw / temperature)`, the modelled
probability that the response beats one scored 0: monotone, so the ranking within a prompt
is the raw ranking, and bounded, so a weighted mean with correctness or constraint scores
stays meaningful. The raw score is stored next to it (`raw` in the scores file).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from persyn.config import ConfigError, ModelRef, QualitySignal
from persyn.rewards.base import QualityScorer, Sample, SignalScore
from persyn.teachers.base import Prompt


def conversation_ids(tokenizer: Any, messages: list[dict[str, str]], response: str) -> list[int]:
    """Token ids of the whole conversation in the tokenizer's chat template."""
    conversation = [*messages, {"role": "assistant", "content": response}]
    ids = tokenizer.apply_chat_template(conversation, tokenize=True)
    # transformers 5 returns a BatchEncoding here, 4.x a plain list
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


class RewardModelScore(QualityScorer):
    """Options: `model` (required; hub id, folder or `pkg:NAME`), `revision`, `dtype`,
    `trust_remote_code`, `device` (default: the run's `device`); `kinds` prompt kinds it
    scores (default [instruction]); `temperature` of the logistic (default 1); `max_length`
    in tokens (default 4096; longer conversations get no score and say so); `batch_tokens`
    (default 8192).
    """

    name = "reward_model"
    covers = "the prompt kinds in `options.kinds`, default instruction"

    def applies(self, prompt: Prompt) -> bool:
        return prompt.kind in self.cfg.options.get("kinds", ["instruction"])

    def _model_ref(self) -> ModelRef:
        keys = ("model", "revision", "dtype", "trust_remote_code")
        try:
            return ModelRef(**{k: self.cfg.options[k] for k in keys if k in self.cfg.options})
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{self.where}.{loc}: {first['msg']}") from None

    def check(self) -> None:
        from persyn.models import check_model_exists

        check_model_exists(self._model_ref(), self.where)

    def __init__(self, cfg: QualitySignal) -> None:
        super().__init__(cfg)
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModelForSequenceClassification

        from persyn.models import (
            _torch_dtype,
            load_tokenizer,
            release_cached_model,
            resolve_device,
            resolve_model_path,
        )

        ref = self._model_ref()
        release_cached_model()  # one model in memory at a time (see persyn.models)
        device = resolve_device(self.cfg.options.get("device"))
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(ref.model),
            revision=ref.revision,
            trust_remote_code=ref.trust_remote_code,
            dtype=_torch_dtype(ref, device),
        )
        if model.config.num_labels != 1:
            raise ConfigError(
                f"{self.where}.model: {ref.model} has {model.config.num_labels} outputs; a "
                "reward model has one (num_labels=1)"
            )
        tokenizer = load_tokenizer(ref)
        # The classifier reads the last non-padding token of each row.
        model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.padding_side = "right"
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer

    def unload(self) -> None:
        from persyn.models import release_cached_model

        self.model = self.tokenizer = None
        release_cached_model()  # collects the weights and empties the GPU cache

    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        import torch
        from scipy.special import expit

        from persyn.rewards.learnability import token_batches

        max_length = int(self.cfg.options.get("max_length", 4096))
        temperature = float(self.cfg.options.get("temperature", 1.0))
        out: list[SignalScore | None] = [None] * len(samples)
        todo = [i for i, (prompt, _) in enumerate(samples) if self.applies(prompt)]
        if not todo:
            return out
        self.load()  # once per stage: later chunks reuse the model
        model, tokenizer = self.model, self.tokenizer
        encoded = {
            i: conversation_ids(tokenizer, samples[i][0].messages, samples[i][1]) for i in todo
        }
        fits = []
        for i in todo:
            if len(encoded[i]) > max_length:
                out[i] = SignalScore(
                    None, f"conversation has {len(encoded[i])} tokens > max_length {max_length}"
                )
            else:
                fits.append(i)
        lengths = [len(encoded[i]) for i in fits]
        for batch in token_batches(lengths, int(self.cfg.options.get("batch_tokens", 8192))):
            rows = [fits[k] for k in batch]
            padded = tokenizer.pad(
                {"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt"
            ).to(model.device)
            with torch.inference_mode():
                raw = model(**padded).logits[:, 0].float().tolist()
            for i, r in zip(rows, raw, strict=True):
                out[i] = SignalScore(float(expit(r / temperature)), raw=r)
        return out

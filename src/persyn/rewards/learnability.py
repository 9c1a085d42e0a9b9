"""Learnability: the student's mean token log-likelihood of a teacher's response.

r_l = (1/|y|) sum_t log p_student(y_t | x, y_<t), with x formatted by the student's chat
template (generation prompt added) and y the response text tokenised by the student's
tokenizer on its own (so any teacher, any tokenizer). Only response tokens count.

Batches are length-bucketed: examples are sorted by length and packed under a token
budget, so padding stays small. A response that does not fit the student's context is
cut and flagged `truncated`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from persyn.config import StudentConfig


@dataclass
class LearnabilityScore:
    logprob_mean: float | None
    response_tokens: int
    truncated: bool
    error: str | None = None


def encode_pair(
    tokenizer: Any, messages: list[dict[str, str]], response: str, max_length: int
) -> tuple[list[int], int, bool]:
    """(input ids, number of prompt tokens, truncated) for prompt + response."""
    from persyn.models import chat_prompt_ids

    prompt_ids = chat_prompt_ids(tokenizer, messages)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids) + list(response_ids)
    truncated = len(ids) > max_length
    return ids[:max_length], len(prompt_ids), truncated


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so each batch's (size x longest) stays within `batch_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], *(lengths[j] for j in current)) if current else lengths[i]
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class LearnabilityScorer:
    """Scores (messages, response) pairs with the student model."""

    def __init__(self, student: StudentConfig) -> None:
        self.cfg = student
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        from persyn.models import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(self.cfg)

    def score(self, pairs: list[tuple[list[dict[str, str]], str]]) -> list[LearnabilityScore]:
        import torch

        if self.model is None:
            self.load()
        encoded = [encode_pair(self.tokenizer, m, r, self.cfg.max_length) for m, r in pairs]
        results: list[LearnabilityScore | None] = [None] * len(pairs)
        lengths = [len(ids) for ids, _, _ in encoded]
        pad = self.tokenizer.pad_token_id or 0
        device = self.model.device
        for batch in token_batches(lengths, self.cfg.batch_tokens):
            longest = max(lengths[i] for i in batch)
            # Left padding puts every response at the end of its row, so the LM head only
            # has to run on the last `keep` positions (`logits_to_keep`): the prompt tokens,
            # most of the sequence, never pay for the vocabulary projection.
            keep = max(len(encoded[i][0]) - encoded[i][1] for i in batch) + 1
            input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = encoded[i][0]
                input_ids[row, longest - len(ids) :] = torch.tensor(ids)
                attention[row, longest - len(ids) :] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=min(keep, longest),
                ).logits.float()
                # logits[:, k] predicts the token after position (longest - keep + k)
                targets = input_ids[:, longest - logits.shape[1] + 1 :].to(device)
                logits = logits[:, :-1]
                token_lp = (
                    logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
                ).cpu()
            for row, i in enumerate(batch):
                ids, n_prompt, truncated = encoded[i]
                n_resp = len(ids) - n_prompt
                if n_resp <= 0:
                    results[i] = LearnabilityScore(
                        None, 0, truncated, "no response tokens fit in the student's context"
                    )
                    continue
                lp = token_lp[row, token_lp.shape[1] - n_resp :]
                results[i] = LearnabilityScore(float(lp.mean()), n_resp, truncated)
        return [r for r in results if r is not None]

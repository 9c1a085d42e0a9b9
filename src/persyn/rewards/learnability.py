"""Learnability: what the student's forward pass over a teacher's response says of it.

By default the paper's mean token log-likelihood, r_l = (1/|y|) sum_t log p_student(y_t |
x, y_<t), with x the prompt formatted by the student's chat template (generation prompt
added) and y the response's tokens (any teacher, any tokenizer) as the student's tokenizer
cuts the whole rendered conversation (`encode_pair`). Only response tokens count. The pass
gives each response token's log-probability (and, for a signal that asks, its rank); the
configured signal (`persyn.rewards.learnability_signals`) makes them one number.

Batches are length-bucketed: examples are sorted by length and packed under a token
budget, so padding stays small. A response that does not fit the student's context is
cut and flagged `truncated`.

The vocabulary projection is most of the cost (and, as [batch x positions x vocabulary]
logits, most of the memory). Where the student's logits are exactly its output head over
its decoder's last hidden state (checked once per load, `split_head`), the head runs only
on the response tokens, `CE_TOKENS` at a time: no logits for prompt or padding positions
are ever made. Models that scale or cap their logits after the head take the full
forward (`logits_to_keep`: still no logits before the responses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from persyn.config import LearnabilitySignalConfig, StudentConfig
from persyn.rewards.learnability_signals import AnswerTokens, learnability_signal


@dataclass
class LearnabilityScore:
    value: float | None  # the signal's (`rewards.learnability`); by default the mean log-prob
    response_tokens: int
    truncated: bool
    error: str | None = None


def encode_pair(
    tokenizer: Any, messages: list[dict[str, str]], response: str, max_length: int
) -> tuple[list[int], int, bool]:
    """(input ids, number of prompt tokens, truncated) for prompt + response.

    The conversation with the response as the assistant's turn is rendered by the chat
    template and tokenised as one text, as the student reads it (and is trained on it);
    the scored tokens are those after the rendered prompt's own tokens, up to the
    end-of-turn mark (not scored). Tokenising prompt and response apart would cut them
    differently where they meet: an answer that opens with a blank line or indentation
    merges with the newline that ends the prompt."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    answered = _with_answer(tokenizer, messages, response)
    closing = _with_answer(tokenizer, messages, "")  # the empty turn: its end-of-turn mark
    end_of_turn = closing[len(prompt) :]
    consistent = closing.startswith(prompt) and answered.startswith(prompt)
    if consistent and answered.endswith(end_of_turn):
        text = answered[: len(answered) - len(end_of_turn)]
    else:  # a template that renders a prompt otherwise once it is answered
        text = prompt + response
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_prompt = 0
    while n_prompt < min(len(ids), len(prompt_ids)) and ids[n_prompt] == prompt_ids[n_prompt]:
        n_prompt += 1
    truncated = len(ids) > max_length
    return ids[:max_length], n_prompt, truncated


def _with_answer(tokenizer: Any, messages: list[dict[str, str]], response: str) -> str:
    turn = {"role": "assistant", "content": response}
    return tokenizer.apply_chat_template([*messages, turn], tokenize=False)


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


# Response tokens per cross-entropy call: each call copies [tokens, vocabulary] logits (in
# float32) and takes their log-softmax, ~100 MB each at a 49K vocabulary, so the peak stays
# near the model's own logits. Measured on 3,104 tokens: +199 MB over the logits at 512,
# +1,170 MB in one call, CPU time within 15%.
CE_TOKENS = 512


def response_token_stats(
    states: Any,
    input_ids: Any,
    n_resp: list[int],
    head: Callable[[Any], Any] | None = None,
    ranks: bool = False,
) -> list[AnswerTokens]:
    """Per row, what the student says of its last `n_resp[row]` tokens, from `states`
    ending at the row's last position (left padding: every response ends the row): logits,
    or hidden states that `head` turns into logits. Each token's log-probability and, with
    `ranks`, its rank (1 + the tokens whose logit is above its own).

    A few cross-entropy calls over the batch's response tokens, `CE_TOKENS` at a time, not
    one per row (a loop of small kernels was a fifth of the scorer's time): positions are
    picked first, so neither the head nor the log-softmax touches the padding of shorter
    responses. The rank is one comparison over the same logits.
    """
    import torch
    import torch.nn.functional as F

    longest = max(n_resp)
    device = states.device
    n = torch.tensor(n_resp, device=device)
    # states[:, j] predicts the token after position j; the last position predicts nothing.
    predicting = states[:, -longest - 1 : -1]
    targets = input_ids[:, -longest:]
    mask = torch.arange(longest, device=device)[None, :] >= (longest - n)[:, None]
    rows, steps = mask.nonzero(as_tuple=True)  # row-major: each row's tokens in order
    token_logprob = torch.empty(len(rows), device=device)
    token_rank = torch.empty(len(rows), device=device, dtype=torch.long) if ranks else None
    for start in range(0, len(rows), CE_TOKENS):
        r, s = rows[start : start + CE_TOKENS], steps[start : start + CE_TOKENS]
        logits = (predicting[r, s] if head is None else head(predicting[r, s])).float()
        target = targets[r, s]
        token_logprob[start : start + CE_TOKENS] = -F.cross_entropy(
            logits, target, reduction="none"
        )
        if token_rank is not None:
            own = logits.gather(1, target[:, None])
            token_rank[start : start + CE_TOKENS] = (logits > own).sum(-1) + 1
    cuts = np.cumsum(n_resp)[:-1]
    logprobs = np.split(token_logprob.cpu().numpy(), cuts)
    if token_rank is None:
        return [AnswerTokens(lp) for lp in logprobs]
    return [
        AnswerTokens(lp, rk)
        for lp, rk in zip(logprobs, np.split(token_rank.cpu().numpy(), cuts), strict=True)
    ]


def split_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, head) of a causal LM when `head(decoder(x).last_hidden_state)` gives
    exactly the model's own logits, checked on a short input; None when it does not (a
    model that scales or soft-caps its logits, or has no separable head)."""
    import torch

    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    ids = (torch.arange(8, device=model.device)[None] * 7 + 3) % model.config.vocab_size
    with torch.inference_mode():
        full = model(input_ids=ids).logits.float()
        try:
            split = head(decoder(input_ids=ids).last_hidden_state).float()
        except (AttributeError, TypeError):
            return None
    if split.shape != full.shape or not torch.allclose(split, full, rtol=1e-4, atol=1e-4):
        return None
    return decoder, head


class LearnabilityScorer:
    """Scores (messages, response) pairs with the student model, as `signal` reads its
    forward pass (default: the paper's mean token log-likelihood)."""

    def __init__(
        self, student: StudentConfig, signal: LearnabilitySignalConfig | None = None
    ) -> None:
        self.cfg = student
        self.signal = learnability_signal(signal or LearnabilitySignalConfig())
        self.model: Any = None
        self.tokenizer: Any = None
        self.split: tuple[Any, Any] | None = None

    def load(self) -> None:
        from persyn.models import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(self.cfg)
        self.split = split_head(self.model)

    def score(self, pairs: list[tuple[list[dict[str, str]], str]]) -> list[LearnabilityScore]:
        if self.cfg.scorer == "vllm":
            return self._score_vllm(pairs)
        import torch

        if self.model is None:
            self.load()
        encoded = [encode_pair(self.tokenizer, m, r, self.cfg.max_length) for m, r in pairs]
        results: list[LearnabilityScore] = [_empty(t) for _, _, t in encoded]
        lengths = [len(ids) for ids, _, _ in encoded]
        pad = self.tokenizer.pad_token_id or 0
        device = self.model.device
        for batch in token_batches(lengths, self.cfg.batch_tokens):
            batch = [i for i in batch if len(encoded[i][0]) > encoded[i][1]]
            if not batch:
                continue
            longest = max(lengths[i] for i in batch)
            n_resp = [lengths[i] - encoded[i][1] for i in batch]
            input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = encoded[i][0]
                input_ids[row, longest - len(ids) :] = torch.tensor(ids)
                attention[row, longest - len(ids) :] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            input_ids = input_ids.to(device)
            inputs = {
                "input_ids": input_ids,
                "attention_mask": attention.to(device),
                "position_ids": positions.to(device),
            }
            # Left padding puts every response at the end of its row: only the last `keep`
            # positions predict response tokens.
            keep = max(n_resp) + 1
            with torch.inference_mode():
                if self.split is not None:
                    decoder, head = self.split
                    states = decoder(**inputs).last_hidden_state[:, -keep:]
                else:
                    states, head = self.model(**inputs, logits_to_keep=keep).logits, None
                tokens = response_token_stats(
                    states, input_ids, n_resp, head, ranks=self.signal.needs_ranks
                )
            for row, i in enumerate(batch):
                value = self.signal.value(tokens[row])
                results[i] = LearnabilityScore(value, n_resp[row], encoded[i][2])
        return results

    def _score_vllm(self, pairs: list[tuple[list[dict[str, str]], str]]) -> list[LearnabilityScore]:
        """vLLM's `prompt_logprobs` on prompt + response token ids (continuous batching).
        On vLLM's CPU backend set `VLLM_CPU_KVCACHE_SPACE` (GiB): without it vLLM reserves
        90% of the machine's memory and refuses to start when less is free."""
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.platforms import current_platform

        from persyn.models import dtype_name, load_tokenizer, resolve_device, resolve_model_path
        from persyn.teachers.vllm import check_engine_device

        if self.model is None:
            check_engine_device("student.scorer vllm")
            self.tokenizer = load_tokenizer(self.cfg)
            folder = resolve_model_path(self.cfg.model)
            self.model = LLM(
                model=f"{folder}/{self.cfg.gguf_file}" if self.cfg.gguf_file else folder,
                tokenizer=folder,
                revision=self.cfg.revision,
                trust_remote_code=self.cfg.trust_remote_code,
                # `auto` as the transformers scorer resolves it (float32 on a CPU, bfloat16
                # on a GPU), not vLLM's own choice: the precision is part of the rows' key
                dtype=dtype_name(self.cfg, resolve_device()),
                # generate() samples one token after the prompt: room for it past max_length
                max_model_len=self.cfg.max_length + 1,
                # vLLM's CPU backend compiles the model for minutes on a few cores, more
                # than a scoring pass gains; on a GPU it stays compiled.
                enforce_eager=current_platform.is_cpu(),
            )
        encoded = [encode_pair(self.tokenizer, m, r, self.cfg.max_length) for m, r in pairs]
        results: list[LearnabilityScore] = [_empty(t) for _, _, t in encoded]
        todo = [i for i, (ids, n_prompt, _) in enumerate(encoded) if len(ids) > n_prompt]
        # prompt_logprobs=0: only the log-probability (and rank) of each actual prompt token
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self.model.generate(
            [TokensPrompt(prompt_token_ids=encoded[i][0]) for i in todo], params, use_tqdm=False
        )
        for i, out in zip(todo, outputs, strict=True):
            ids, n_prompt, truncated = encoded[i]
            read = [out.prompt_logprobs[k][ids[k]] for k in range(n_prompt, len(ids))]
            # vLLM's rank counts the tokens at or above the token's own log-probability:
            # transformers' (strictly above, plus one) but for exact ties
            tokens = AnswerTokens(
                np.array([t.logprob for t in read], dtype=np.float32),
                np.array([t.rank for t in read]) if self.signal.needs_ranks else None,
            )
            results[i] = LearnabilityScore(self.signal.value(tokens), len(read), truncated)
        return results


def _empty(truncated: bool) -> LearnabilityScore:
    """The score of a pair whose response got no token inside the student's context."""
    return LearnabilityScore(None, 0, truncated, "no response tokens fit in the student's context")

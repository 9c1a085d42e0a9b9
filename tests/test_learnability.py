from __future__ import annotations

from pathlib import Path

import pytest
import torch

from persyn.config import StudentConfig
from persyn.models import load_causal_lm
from persyn.rewards import learnability
from persyn.rewards.learnability import (
    LearnabilityScorer,
    encode_pair,
    response_token_stats,
    split_head,
    token_batches,
)

PAIRS = [
    ([{"role": "user", "content": "What is 2 + 3?"}], "2 + 3 = 5. The answer is 5."),
    ([{"role": "user", "content": "Say hi."}], "hi"),
    (
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Describe the sea."},
        ],
        "The sea is wide and blue, and it moves with the wind and the moon all day long.",
    ),
]
# Answers whose first characters merge with the newline that ends the prompt when the
# conversation is tokenised whole (a blank line, indentation), and trailing whitespace.
EDGE_PAIRS = [
    ([{"role": "user", "content": "Explain."}], "\n\nFirst, the sum is 5."),
    ([{"role": "user", "content": "Write code."}], "    return x + 1\n"),
    ([{"role": "user", "content": "List two."}], "- a\n- b\n\n"),
]


def reference_logprob(model, tokenizer, messages, response) -> tuple[float, int]:
    """Built apart from persyn's construction: the whole conversation, answer included,
    rendered by the tokenizer's chat template and tokenised as one text (as the student
    reads it in training); the answer's tokens are those whose characters overlap the
    answer's text in the render; their mean log-probability (and count) from one plain,
    unbatched forward pass with a full-vocabulary log-softmax."""
    conversation = [*messages, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    start = text.rindex(response)  # the answer is the last turn
    end = start + len(response)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    span = [k for k, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start]
    assert span == list(range(span[0], span[-1] + 1)) and span[0] > 0
    ids = torch.tensor([encoded["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    # position k - 1 predicts token k
    mean = torch.stack([logp[k - 1, ids[0, k]] for k in span]).mean()
    return float(mean), len(span)


@pytest.mark.parametrize("pairs", [PAIRS, EDGE_PAIRS], ids=["plain", "whitespace-edges"])
def test_matches_an_independent_reference(tiny_lm_dir: Path, pairs) -> None:
    cfg = StudentConfig(model=str(tiny_lm_dir), dtype="float32", batch_tokens=256)
    scores = LearnabilityScorer(cfg).score(pairs)
    model, tokenizer = load_causal_lm(cfg)
    for (messages, response), s in zip(pairs, scores, strict=True):
        expected, n_tokens = reference_logprob(model, tokenizer, messages, response)
        assert s.value == pytest.approx(expected, abs=1e-4)
        assert s.response_tokens == n_tokens
        assert not s.truncated


def test_the_head_is_split_off_only_where_it_gives_the_models_own_logits(
    tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny Llama's logits are its head over its decoder: the scorer runs the head on
    response tokens only. A model that scales its logits after the head is not split, and
    scores like the reference (its own logits) all the same."""
    cfg = StudentConfig(model=str(tiny_lm_dir), dtype="float32", batch_tokens=256)
    scorer = LearnabilityScorer(cfg)
    scorer.load()
    assert scorer.split is not None
    model_class = type(scorer.model)
    forward = model_class.forward

    def capped(self, *args, **kwargs):  # as Gemma-2's final_logit_softcapping does
        out = forward(self, *args, **kwargs)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out

    monkeypatch.setattr(model_class, "forward", capped)
    assert split_head(scorer.model) is None
    scores = LearnabilityScorer(cfg).score(PAIRS)
    model, tokenizer = load_causal_lm(cfg)
    for (messages, response), s in zip(PAIRS, scores, strict=True):
        expected, _ = reference_logprob(model, tokenizer, messages, response)
        assert s.value == pytest.approx(expected, abs=1e-4)


def test_batched_token_stats_match_a_per_row_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-call cross-entropy equals the per-row loop it replaced, rows of any length;
    so do the ranks (1 + the logits above the token's own)."""
    generator = torch.Generator().manual_seed(0)
    n_resp = [1, 7, 3, 7]
    logits = torch.randn(4, 8, 50, generator=generator, dtype=torch.float64).to(torch.bfloat16)
    input_ids = torch.randint(0, 50, (4, 12), generator=generator)
    loop, loop_ranks = [], []
    for row, n in enumerate(n_resp):
        row_logits, targets = logits[row, -n - 1 : -1].float(), input_ids[row, -n:]
        loop.append(torch.log_softmax(row_logits, -1)[torch.arange(n), targets].tolist())
        own = row_logits[torch.arange(n), targets]
        loop_ranks.append([int((row_logits[k] > own[k]).sum()) + 1 for k in range(n)])
    for ce_tokens in (512, 5):  # 5: calls that split rows
        monkeypatch.setattr(learnability, "CE_TOKENS", ce_tokens)
        tokens = response_token_stats(logits, input_ids, n_resp, ranks=True)
        for got, expected, ranks in zip(tokens, loop, loop_ranks, strict=True):
            assert got.logprobs.tolist() == pytest.approx(expected, abs=1e-5)
            assert got.ranks is not None and got.ranks.tolist() == ranks
    assert response_token_stats(logits, input_ids, n_resp)[0].ranks is None


def test_only_response_tokens_count(tiny_lm_dir: Path) -> None:
    """The same response after different prompts is scored on its own tokens only."""
    cfg = StudentConfig(model=str(tiny_lm_dir), dtype="float32")
    _, tokenizer = load_causal_lm(cfg)
    ids, n_prompt, _ = encode_pair(tokenizer, PAIRS[0][0], "hello there", 256)
    assert tokenizer.decode(ids[n_prompt:]) == "hello there"


def test_truncation_is_flagged(tiny_lm_dir: Path) -> None:
    cfg = StudentConfig(model=str(tiny_lm_dir), dtype="float32", max_length=20)
    [s] = LearnabilityScorer(cfg).score([(PAIRS[0][0], "word " * 50)])
    assert s.truncated and s.response_tokens < 50


def test_token_batches_respect_budget() -> None:
    lengths = [5, 100, 7, 50, 51, 6, 99]
    batches = token_batches(lengths, 120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 120


def test_pairs_without_response_tokens_get_a_reason(tiny_lm_dir: Path) -> None:
    """An empty response, or a prompt that fills the context, is an error row, in place."""
    cfg = StudentConfig(model=str(tiny_lm_dir), dtype="float32", max_length=64)
    long_prompt = [{"role": "user", "content": "word " * 80}]
    scores = LearnabilityScorer(cfg).score([PAIRS[1], (PAIRS[0][0], ""), (long_prompt, "hi")])
    assert scores[0].value is not None and scores[0].error is None
    for s in scores[1:]:
        assert s.value is None and s.response_tokens == 0
        assert s.error == "no response tokens fit in the student's context"
    assert scores[2].truncated and not scores[1].truncated

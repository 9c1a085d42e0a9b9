"""Loading Hugging Face models and tokenizers, shared by teachers, the student and routers.

`pkg:NAME[/sub/dir]` names a model shipped inside an installed Python package (found
without importing it), so packaged models load offline. A one-slot cache keeps the last
loaded model: teachers that differ only in their system prompt, and a student that is one
of the teachers, reuse the weights instead of loading them again, while no more than one
model is ever held.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any

from persyn.config import ConfigError, ModelRef, fingerprint


def resolve_model_path(model: str) -> str:
    """Turn `pkg:NAME/sub` into a folder path; other values pass through unchanged."""
    if not model.startswith("pkg:"):
        return model
    pkg, _, sub = model[4:].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model {model!r}: package {pkg!r} is not installed (pip install it)")
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.exists():
        raise ConfigError(f"model {model!r}: {path} does not exist")
    return str(path)


def check_model_exists(ref: ModelRef, where: str) -> None:
    """Fail early, with the config key, when a local model path is missing."""
    path = resolve_model_path(ref.model)
    looks_local = path.startswith(("/", ".", "~")) or ref.model.startswith("pkg:")
    if looks_local and not Path(path).expanduser().exists():
        raise ConfigError(f"{where}.model: {Path(path).expanduser().absolute()} does not exist")
    if ref.gguf_file and Path(path).exists() and not (Path(path) / ref.gguf_file).exists():
        raise ConfigError(f"{where}.gguf_file: {ref.gguf_file} not found in {path}")


# The run's `device` (see `use_device`): every model persyn loads goes where
# `resolve_device()` says, so one setting moves the student scorer, the router, the reward
# model and HF teachers together. Process-wide because loaders sit deep under the stages;
# Ray replicas receive it with their config and set it in their own process.
_device_setting = "auto"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def use_device(setting: str) -> None:
    """Make `setting` ("auto", "cpu", "cuda" or "cuda:N") this process's device rule."""
    global _device_setting
    # Only the form is checked: whether a GPU is there is asked (importing torch) at the
    # first model load, so commands that load no model stay fast.
    if not _DEVICE.fullmatch(setting):
        raise ConfigError(f"device: {setting!r}: use auto, cpu, cuda or cuda:N")
    _device_setting = setting


def device_setting() -> str:
    """This process's device rule as written ("auto", "cpu", "cuda" or "cuda:N")."""
    return _device_setting


def resolve_device(setting: str | None = None) -> str:
    """The torch device for `setting` (default: the process's rule): `auto` is `cuda` when a
    GPU is present, else `cpu`; `cuda`/`cuda:N` without a GPU is a `ConfigError`."""
    import torch

    setting = setting or _device_setting
    if not _DEVICE.fullmatch(setting):
        raise ConfigError(f"device: {setting!r}: use auto, cpu, cuda or cuda:N")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {setting}: no CUDA GPU is visible here; use auto or cpu")
    return setting


def dtype_name(ref: ModelRef, device: str) -> str:
    """The precision `ref` loads in on `device`: its `dtype`, with `auto` as bfloat16 on a
    GPU and float32 on a CPU. Plain data, so a cache key can name it without torch."""
    if ref.dtype != "auto":
        return ref.dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def _torch_dtype(ref: ModelRef, device: str | None = None) -> Any:
    import torch

    return getattr(torch, dtype_name(ref, device or resolve_device()))


def _ref_key(ref: ModelRef) -> tuple[Any, ...]:
    return (ref.model, ref.gguf_file, ref.revision, ref.trust_remote_code, ref.dtype)


_cache: dict[str, Any] = {}


def load_tokenizer(ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        resolve_model_path(ref.model),
        gguf_file=ref.gguf_file,
        revision=ref.revision,
        trust_remote_code=ref.trust_remote_code,
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(ref: ModelRef) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode on `resolve_device()`, cached one model deep."""
    from transformers import AutoModelForCausalLM

    device = resolve_device()
    key = (*_ref_key(ref), device)
    if _cache.get("key") == key:
        return _cache["model"], _cache["tokenizer"]
    release_cached_model()
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(ref.model),
        gguf_file=ref.gguf_file,
        revision=ref.revision,
        trust_remote_code=ref.trust_remote_code,
        dtype=_torch_dtype(ref, device),
    ).to(device)
    model.eval()
    tokenizer = load_tokenizer(ref)
    _cache.update(key=key, model=model, tokenizer=tokenizer)
    return model, tokenizer


def chat_template_hash(ref: ModelRef) -> str:
    """Hash of the chat template `ref`'s tokenizer carries: the template decides how a
    prompt is put to the model, so a learnability score depends on it. Only the tokenizer
    files are read, once per process and model."""
    return _template_hash(ref.model, ref.gguf_file, ref.revision, ref.trust_remote_code)


@cache
def _template_hash(
    model: str, gguf_file: str | None, revision: str | None, trust_remote_code: bool
) -> str:
    ref = ModelRef(
        model=model, gguf_file=gguf_file, revision=revision, trust_remote_code=trust_remote_code
    )
    return fingerprint(load_tokenizer(ref).chat_template)


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of `messages` in the chat template, ending with the generation prompt."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding here, 4.x a plain list
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def release_cached_model() -> None:
    import gc

    _cache.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass

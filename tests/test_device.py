"""One device rule for every model persyn loads: `auto` follows the GPU, `cpu` forces it.

Runs with whatever device this machine has: under `auto` each model must sit where
`torch.cuda.is_available()` says, under `cpu` on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_run_config

from persyn.config import ConfigError, ModelRef, QualitySignal, RouterConfig, parse_config
from persyn.models import load_causal_lm, release_cached_model, resolve_device, use_device
from persyn.rewards.reward_model import RewardModelScore
from persyn.router.encoder import PromptEncoder
from persyn.router.lm import build_scoring_model

EXPECTED_AUTO = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def restore_rule() -> Iterator[None]:
    yield
    use_device("auto")
    release_cached_model()


def placements(tiny_lm_dir: Path, rm_dir: Path) -> dict[str, str]:
    """The device type of each kind of model, loaded under the current rule."""
    student, _ = load_causal_lm(ModelRef(model=str(tiny_lm_dir), dtype="float32"))
    encoder = PromptEncoder(str(tiny_lm_dir))
    encoder.encode(["a prompt"])
    lm_router = build_scoring_model(str(tiny_lm_dir), 3, RouterConfig())
    reward = RewardModelScore(
        QualitySignal(kind="reward_model", options={"model": str(rm_dir), "dtype": "float32"})
    )
    reward.load()
    models: dict[str, Any] = {
        "student / hf teacher": student,
        "router encoder": encoder._model,
        "lm router": lm_router,
        "reward model": reward.model,
    }
    return {name: next(m.parameters()).device.type for name, m in models.items()}


@pytest.fixture(scope="module")
def rm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_reward_model import tiny_reward_model

    return tiny_reward_model(tiny_lm_dir, tmp_path_factory.mktemp("rm"))


def test_auto_follows_the_gpu_and_cpu_forces_the_cpu(tiny_lm_dir: Path, rm_dir: Path) -> None:
    use_device("auto")
    assert resolve_device() == EXPECTED_AUTO
    assert set(placements(tiny_lm_dir, rm_dir).values()) == {EXPECTED_AUTO}
    release_cached_model()
    use_device("cpu")
    assert resolve_device() == "cpu"
    assert set(placements(tiny_lm_dir, rm_dir).values()) == {"cpu"}


def test_student_training_follows_the_rule(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from persyn.student.sft import sft_config

    cfg = parse_config(tiny_run_config(tiny_lm_dir, tmp_path, device="cpu"))
    args = sft_config(cfg.student_training, cfg.student, tmp_path, cfg.device)
    assert args.use_cpu and not args.bf16
    auto = sft_config(cfg.student_training, cfg.student, tmp_path, "auto")
    assert auto.use_cpu == (EXPECTED_AUTO == "cpu")


def test_bad_settings_are_config_errors(tiny_lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device"):
        parse_config(tiny_run_config(tiny_lm_dir, tmp_path, device="gpu"))
    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        use_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")

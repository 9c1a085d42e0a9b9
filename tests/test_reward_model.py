"""The reward-model quality signal, on a tiny LlamaForSequenceClassification built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy.special import expit

from persyn.config import ConfigError, QualitySignal
from persyn.rewards.reward_model import RewardModelScore, conversation_ids
from persyn.teachers.base import Prompt


def tiny_reward_model(tiny_lm_dir: Path, folder: Path, num_labels: int = 1) -> Path:
    """A 2-layer Llama with one output (num_labels=1) and SmolLM2's tokenizer/template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    config = LlamaConfig.from_pretrained(tiny_lm_dir, num_labels=num_labels)
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_reward_model(tiny_lm_dir, tmp_path_factory.mktemp("tiny-rm"))


PROMPTS = [
    Prompt("a", [{"role": "user", "content": "Describe the sea."}]),
    Prompt("b", [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]),
    Prompt("c", [{"role": "user", "content": "What is 2 + 2?"}], "math", "4"),
]
RESPONSES = ["The sea is wide and blue and full of life.", "Hello!", "4"]


def signal(rm_dir: Path, **options: object) -> RewardModelScore:
    return RewardModelScore(
        QualitySignal(
            kind="reward_model", options={"model": str(rm_dir), "dtype": "float32", **options}
        )
    )


def test_batched_scores_match_one_at_a_time(rm_dir: Path) -> None:
    scorer = signal(rm_dir, kinds=["instruction", "math"], batch_tokens=4096)
    batched = scorer.score(list(zip(PROMPTS, RESPONSES, strict=True)))
    scorer.load()
    model, tokenizer = scorer.model, scorer.tokenizer
    for (prompt, response), s in zip(zip(PROMPTS, RESPONSES, strict=True), batched, strict=True):
        ids = torch.tensor([conversation_ids(tokenizer, prompt.messages, response)])
        with torch.no_grad():
            raw = float(model(input_ids=ids).logits[0, 0])
        assert s.raw == pytest.approx(raw, abs=1e-4)
        assert s.value == pytest.approx(float(expit(raw)), abs=1e-6)
        assert 0 < s.value < 1


def test_conversation_uses_the_chat_template(rm_dir: Path) -> None:
    scorer = signal(rm_dir)
    scorer.load()
    tokenizer = scorer.tokenizer
    text = tokenizer.decode(conversation_ids(tokenizer, PROMPTS[0].messages, RESPONSES[0]))
    assert "<|im_start|>user\nDescribe the sea." in text
    assert "<|im_start|>assistant\nThe sea is wide" in text


def test_kinds_temperature_and_overlong(rm_dir: Path) -> None:
    samples = list(zip(PROMPTS, RESPONSES, strict=True))
    default = signal(rm_dir).score(samples)
    assert default[2] is None  # math prompts are left to the math signal by default
    hot = signal(rm_dir, temperature=10.0).score(samples)
    assert hot[0].raw == pytest.approx(default[0].raw, abs=1e-4)
    assert hot[0].value == pytest.approx(float(expit(default[0].raw / 10)), abs=1e-6)
    [short] = signal(rm_dir, max_length=12).score(samples[:1])
    assert short.value is None and "max_length 12" in short.error


def test_rejects_a_classifier_with_several_outputs(tiny_lm_dir: Path, tmp_path: Path) -> None:
    two = tiny_reward_model(tiny_lm_dir, tmp_path / "two", num_labels=2)
    with pytest.raises(
        ConfigError, match=r"rewards.quality\[reward_model\].options.model: .*2 outputs"
    ):
        signal(two).score(list(zip(PROMPTS, RESPONSES, strict=True)))
    with pytest.raises(ConfigError, match=r"options.dtype"):
        signal(two, dtype="float8").score(list(zip(PROMPTS, RESPONSES, strict=True)))


def test_validate_checks_signal_options_before_any_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from conftest import tiny_run_config

    from persyn.config import parse_config
    from persyn.pipeline import validate

    def config(*quality: dict) -> dict:
        return tiny_run_config(tiny_lm_dir, tmp_path, rewards={"quality": list(quality)})

    missing = {"kind": "reward_model", "options": {"model": str(tmp_path / "no-such-rm")}}
    with pytest.raises(
        ConfigError, match=r"rewards.quality\[reward_model\].options.model: .*does not exist"
    ):
        validate(parse_config(config(missing)))
    with pytest.raises(ConfigError, match=r"options.model: Field required"):
        validate(parse_config(config({"kind": "reward_model"})))
    judge = {"kind": "judge", "name": "strict", "options": {"teacher": {"backend": "scripted"}}}
    with pytest.raises(ConfigError, match=r"rewards.quality\[strict\].options.teacher"):
        validate(parse_config(config(judge)))
    with pytest.raises(ConfigError, match=r"options.mode: use strict or loose"):
        validate(parse_config(config({"kind": "ifeval", "options": {"mode": "lax"}})))


def test_score_stage_loads_the_reward_model_once(
    tiny_lm_dir: Path, rm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several quality chunks, one load: the signal keeps its model for the whole stage."""
    from conftest import tiny_run_config
    from transformers import AutoModelForSequenceClassification

    import persyn.stages.score as score_stage
    from persyn.config import parse_config
    from persyn.pipeline import Run, run_stage
    from persyn.store import read_jsonl

    loads: list[str] = []
    original = AutoModelForSequenceClassification.from_pretrained

    def counted(path: str, *args: object, **kwargs: object) -> object:
        loads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", counted)
    monkeypatch.setattr(score_stage, "QUALITY_CHUNK", 8)
    rm = {"model": str(rm_dir), "dtype": "float32", "kinds": ["instruction", "math"]}
    quality = [{"kind": "math"}, {"kind": "reward_model", "options": rm}]
    cfg = parse_config(tiny_run_config(tiny_lm_dir, tmp_path / "run", rewards={"quality": quality}))
    run = Run.open(cfg)
    run_stage(run, "score")
    rows = read_jsonl(run.store.path("scores") / "quality.jsonl")
    assert len(rows) > 3 * 8  # several chunks were scored
    assert all("reward_model" in r["signals"] for r in rows)
    assert loads == [str(rm_dir)]

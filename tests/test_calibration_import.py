"""Calibrating from a parallel-response dataset (`calibration.source`): each preset's shape
through the whole pipeline on the tiny student with zero calibration generations, the same
router inputs as generating the same answers, and one line per kind of bad data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.calibration_import import load_import
from persyn.cli import app
from persyn.config import ConfigError, parse_config
from persyn.data import DataError
from persyn.pipeline import Run, run_pipeline, run_stage, validate
from persyn.store import read_jsonl

SOLVERS = ("solver-verbose", "solver-concise", "solver-quick")
# Data model name -> pool teacher, as a user would map a public dataset's models.
DATA_MODELS = {
    "Qwen2.5-7B-Instruct": SOLVERS[0],
    "gemma-2-2b-it": SOLVERS[1],
    "Phi-3-mini": SOLVERS[2],
}
N_PROMPTS = 8


def instruction(i: int) -> str:
    return f"Write a short note about topic number {i}."


def answer(i: int, k: int) -> str:
    """Model k's answer to prompt i: lengths and wording differ per model and prompt."""
    return f"Note {i}: " + " ".join(["topic", "details", "and", "more"][: 1 + (i + k) % 4]) + "."


def grade(i: int, k: int) -> float:
    return float(1 + (3 * i + 5 * k) % 9)  # 1..9 on a 1-10 scale


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


# -- each preset's shape, built here --------------------------------------------------
def magpie_zoo(folder: Path) -> tuple[Path, dict[str, Any]]:
    rows = [
        {"uuid": f"u{i}", "instruction": instruction(i)}
        | {model: answer(i, k) for k, model in enumerate(DATA_MODELS)}
        for i in range(N_PROMPTS)
    ]
    path = write_parquet(folder / "zoo.parquet", rows)
    responses = {teacher: model for model, teacher in DATA_MODELS.items()}
    return path, {"preset": "magpie-zoo", "responses": responses}


def ultrafeedback(folder: Path) -> tuple[Path, dict[str, Any]]:
    models = [*DATA_MODELS, "gpt-4"]  # gpt-4: a teacher only in the data
    rows = [
        {
            "source": "evol_instruct",
            "instruction": instruction(i),
            "models": models,
            "completions": [
                {
                    "model": model,
                    "response": answer(i, k),
                    "overall_score": grade(i, k),
                    "fine-grained_score": grade(i, k) / 2,
                    "critique": "fine",
                }
                for k, model in enumerate(models)
            ],
        }
        for i in range(N_PROMPTS)
    ]
    return write_jsonl(folder / "uf.jsonl", rows), {
        "preset": "ultrafeedback",
        "models": {**DATA_MODELS, "gpt-4": "gpt4"},
    }


def nectar(folder: Path) -> tuple[Path, dict[str, Any]]:
    models = [*DATA_MODELS, "alpaca-7b"]  # alpaca-7b: not in the pool, ignored
    rows = [
        {
            "prompt": f"\n\nHuman: {instruction(i)}\n\nAssistant:",
            "answers": [
                {"answer": answer(i, k), "model": model, "rank": 1 + (i + k) % len(models)}
                for k, model in enumerate(models)
            ],
            "turns": 1,
            "num_responses": len(models),
        }
        for i in range(N_PROMPTS)
    ]
    return write_parquet(folder / "nectar.parquet", rows), {
        "preset": "nectar",
        "models": DATA_MODELS,
    }


def mixinstruct(folder: Path) -> tuple[Path, dict[str, Any]]:
    rows = [
        {
            "id": f"unified_chip2/{i}",
            "instruction": instruction(i),
            "input": "Keep it short." if i % 2 else "",
            "output": "reference",
            "candidates": [
                {
                    "decoding_method": "top_p_sampling",
                    "model": model,
                    "text": answer(i, k),
                    "scores": {"bartscore": -grade(i, k), "bleu": 0.1, "rougeL": 0.2},
                }
                for k, model in enumerate(DATA_MODELS)
            ],
        }
        for i in range(N_PROMPTS)
    ]
    # A preset field overridden: score the candidates by their (nested) BARTScore.
    return write_jsonl(folder / "mix.jsonl", rows), {
        "preset": "mixinstruct",
        "models": DATA_MODELS,
        "score_field": "scores.bartscore",
    }


def routerbench(folder: Path) -> tuple[Path, dict[str, Any]]:
    root = folder / "routerbench"
    for k, model in enumerate(DATA_MODELS):
        records = [
            {
                "index": i,
                "origin_query": instruction(i),
                "prompt": f"Question: {instruction(i)}",
                "prediction": answer(i, k),
                "ground_truth": "n/a",
                "score": float((i + k) % 2),
                "prompt_tokens": 12,
                "completion_tokens": 3 + k,
                "cost": 0.0001,
            }
            for i in range(N_PROMPTS)
        ]
        target = root / "notes" / model
        target.mkdir(parents=True)
        (target / "results.json").write_text(json.dumps({"records": records}))
    return root, {"preset": "routerbench", "models": DATA_MODELS}


PRESETS = {
    "magpie-zoo": magpie_zoo,
    "ultrafeedback": ultrafeedback,
    "nectar": nectar,
    "mixinstruct": mixinstruct,
    "routerbench": routerbench,
}
SCORED = {"ultrafeedback", "nectar", "mixinstruct", "routerbench"}


def import_config(
    tiny_lm_dir: Path, run_dir: Path, source: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    """The solvers as the pool (they answer the routed arithmetic prompts), calibrated
    from `source`. Only `math` scores quality, so the data's instruction prompts are
    ranked on learnability alone, said explicitly (a test adds `imported` where the data
    has scores)."""
    data = tiny_run_config(
        tiny_lm_dir,
        run_dir,
        teachers=[{"name": n, "backend": "scripted", "model": n} for n in SOLVERS],
        prompts={"builtin": "arithmetic", "num_prompts": 6, "seed": 0},
        calibration={"size": 100, "source": source},
        rewards={"quality": [{"kind": "math"}], "learnability_only": True},
        router={"epochs": 5, "val_fraction": 0.25},
    )
    data.update(overrides)
    return data


def line_counts(run_dir: Path) -> dict[str, int]:
    logs = [*run_dir.glob("generations/*.jsonl"), *run_dir.glob("scores/*.jsonl")]
    return {str(p.relative_to(run_dir)): len(p.read_text().splitlines()) for p in logs}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_through_pipeline(preset: str, tiny_lm_dir: Path, tmp_path: Path) -> None:
    path, mapping = PRESETS[preset](tmp_path)
    run_dir = tmp_path / "run"
    data = import_config(tiny_lm_dir, run_dir, {"path": str(path), **mapping})
    if preset in SCORED:
        data["rewards"] = {"quality": [{"kind": "math"}, {"kind": "imported"}]}
    if preset == "ultrafeedback":
        data["teachers"].append({"name": "gpt4", "backend": "imported"})
    summary = run_pipeline(parse_config(data))

    teachers = [t["name"] for t in data["teachers"]]
    split = json.loads((run_dir / "calibration.json").read_text())
    assert len(split["calibration"]) == N_PROMPTS and len(split["routed"]) == 6
    # zero calibration generations: only the routed prompts were generated
    assert summary["generations"] == 6
    assert summary["imported_responses"] == N_PROMPTS * len(teachers)
    for t in teachers:
        rows = read_jsonl(run_dir / "generations" / f"{t}.jsonl")
        imported = [r for r in rows if r.get("provenance") == "imported"]
        assert sorted(r["prompt_id"] for r in imported) == sorted(split["calibration"])
        assert all(r["source"] == str(path) and r["source_row"] for r in imported)
    rewards = read_jsonl(run_dir / "rewards.jsonl")
    assert len(rewards) == N_PROMPTS
    assert all(r["oracle"] in teachers for r in rewards)
    if preset in SCORED:  # the imported score is a quality signal, in [0, 1]
        quality = read_jsonl(run_dir / "scores" / "quality.jsonl")
        values = [q["signals"]["imported"] for q in quality]
        assert len(values) == N_PROMPTS * len(teachers) and 0 <= min(values) < max(values) <= 1
    routes = read_jsonl(run_dir / "routes.jsonl")
    assert "gpt4" not in {r["teacher"] for r in routes}  # a data-only teacher is never routed
    dataset = read_jsonl(run_dir / "dataset.jsonl")
    assert len(dataset) == N_PROMPTS + 6 and summary["failed_rows"] == 0
    assert {r["selected_by"] for r in dataset if r["id"] in split["calibration"]} == {"oracle"}
    # Each row says where its answer comes from: the data's file, row and model name for
    # imported answers (licences differ), the teacher's model for generated ones.
    generated = {
        (r["prompt_id"], t): r
        for t in teachers
        for r in read_jsonl(run_dir / f"generations/{t}.jsonl")
    }
    for row in dataset:
        provenance, gen = row["provenance"], generated[(row["id"], row["teacher"])]
        if row["id"] in split["calibration"]:
            assert provenance["imported"] is True and provenance["source"] == str(path)
            assert provenance["source_row"] == gen["source_row"]
            assert provenance["teacher_model"] == gen["model"] != row["teacher"]
        else:
            assert provenance["imported"] is False and provenance["source"] is None
            assert provenance["teacher_model"] == row["teacher"]  # the solver's name
        assert provenance["generation_settings"] == gen["fp"]
    loaded = datasets.load_from_disk(str(run_dir / "dataset"))
    assert [r["provenance"] for r in loaded] == [r["provenance"] for r in dataset]


def test_rerun_recomputes_nothing(tiny_lm_dir: Path, tmp_path: Path) -> None:
    path, mapping = ultrafeedback(tmp_path)
    mapping["models"] = DATA_MODELS  # gpt-4 is not in this pool: ignored
    run_dir = tmp_path / "run"
    data = import_config(tiny_lm_dir, run_dir, {"path": str(path), **mapping})
    summary = run_pipeline(parse_config(data))
    before = line_counts(run_dir)
    stamps = {p.name: json.loads(p.read_text())["finished_at"] for p in run_dir.glob("stages/*")}
    assert run_pipeline(parse_config(data)) == summary
    assert line_counts(run_dir) == before
    for p in run_dir.glob("stages/*"):
        assert json.loads(p.read_text())["finished_at"] == stamps[p.name]

    # Edited data reruns the import: an unchanged answer is neither written nor scored
    # again; a changed one replaces the old row, and only its prompt is scored again (the
    # prompt's imported scores changed with it).
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["completions"][0]["response"] = "A different note."
    write_jsonl(path, rows)
    run_pipeline(parse_config(data))
    after = line_counts(run_dir)
    for name in ("scores/learnability.jsonl", "scores/quality.jsonl"):
        assert after[name] - before[name] == len(SOLVERS)
    imported = {
        t: [
            r
            for r in read_jsonl(run_dir / "generations" / f"{t}.jsonl")
            if r.get("provenance") == "imported"
        ]
        for t in SOLVERS
    }
    assert {t: len(v) for t, v in imported.items()} == {
        "solver-verbose": N_PROMPTS + 1,
        "solver-concise": N_PROMPTS,
        "solver-quick": N_PROMPTS,
    }
    row = imported["solver-verbose"][-1]
    assert row["text"] == "A different note." and row["source_row"].endswith(
        "line 4: completions[0].response"
    )


def test_import_equals_generating(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Generate a calibration set, export its answers to a file, import that file into a
    fresh run: the same rewards (the router's inputs), split, routes and dataset."""
    base = tiny_run_config(
        tiny_lm_dir,
        tmp_path / "generated",
        teachers=[{"name": n, "backend": "scripted", "model": n} for n in SOLVERS],
        prompts={"builtin": "demo-mix", "num_prompts": 20, "seed": 1},
        calibration={"size": 10, "seed": 0},
        router={"epochs": 5, "val_fraction": 0.3},
    )
    generated = run_pipeline(parse_config(base))
    gen_dir = tmp_path / "generated"
    split = json.loads((gen_dir / "calibration.json").read_text())
    prompts = {r["id"]: r for r in read_jsonl(gen_dir / "prompts.jsonl")}
    answers = {
        t: {r["prompt_id"]: r["text"] for r in read_jsonl(gen_dir / "generations" / f"{t}.jsonl")}
        for t in SOLVERS
    }
    rows = [
        {"id": pid, "prompt": prompts[pid]["messages"][-1]["content"]}
        | {t: answers[t][pid] for t in SOLVERS}
        for pid in split["calibration"]
    ]
    path = write_jsonl(tmp_path / "calibration.jsonl", rows)

    source = {"path": str(path), "id": "id", "responses": {t: t for t in SOLVERS}}
    data = {**base, "run_dir": str(tmp_path / "imported")}
    data["calibration"] = {**base["calibration"], "source": source}
    imported = run_pipeline(parse_config(data))
    imp_dir = tmp_path / "imported"

    def rows(run_dir: Path, name: str) -> list[dict[str, Any]]:
        # without the fingerprints of the config that made them (the import is part of it)
        # and the provenance (it says which answers were imported)
        return [
            {k: v for k, v in r.items() if not k.endswith("_fp") and k != "provenance"}
            for r in read_jsonl(run_dir / name)
        ]

    assert json.loads((imp_dir / "calibration.json").read_text()) == split
    for name in ("rewards.jsonl", "routes.jsonl", "dataset.jsonl"):
        assert rows(imp_dir, name) == rows(gen_dir, name)
    assert generated["generations"] == 10 * 3 + 10 and imported["generations"] == 10
    for row in read_jsonl(imp_dir / "dataset.jsonl"):
        assert row["provenance"]["imported"] is (row["id"] in split["calibration"])
    assert imported["imported_responses"] == 10 * 3


# -- bad data: one line naming the file, row and field ---------------------------------
def load(tiny_lm_dir: Path, tmp_path: Path, source: dict[str, Any]) -> None:
    load_import(parse_config(import_config(tiny_lm_dir, tmp_path / "run", source)))


def uf_row(i: int, completions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"instruction": instruction(i), "completions": completions}


def uf_answers(i: int, **changes: Any) -> list[dict[str, Any]]:
    out = [
        {"model": m, "response": answer(i, k), "overall_score": grade(i, k)}
        for k, m in enumerate(DATA_MODELS)
    ]
    for key, value in changes.items():
        index, field = key.split("__")
        out[int(index[1:])][field] = value
    return out


def test_missing_teacher_column(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"uuid": f"u{i}", "instruction": instruction(i)}
        | {m: answer(i, k) for k, m in enumerate(DATA_MODELS)}
        for i in range(3)
    ]
    del rows[1]["gemma-2-2b-it"]
    path = write_jsonl(tmp_path / "zoo.jsonl", rows)
    responses = {t: m for m, t in DATA_MODELS.items()}
    with pytest.raises(DataError) as err:
        load(
            tiny_lm_dir,
            tmp_path,
            {"path": str(path), "preset": "magpie-zoo", "responses": responses},
        )
    assert str(err.value) == (
        f"{path}: line 2: missing column 'gemma-2-2b-it' "
        "(calibration.source.responses['solver-concise'])"
    )


def test_empty_response(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rows = [uf_row(0, uf_answers(0)), uf_row(1, uf_answers(1, c1__response="  "))]
    rows.append(uf_row(2, uf_answers(2)))
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    source = {"path": str(path), "preset": "ultrafeedback", "models": DATA_MODELS}
    with pytest.raises(DataError) as err:
        load(tiny_lm_dir, tmp_path, source)
    assert str(err.value) == (
        f"{path}: line 2: completions[1].response: empty response from model 'gemma-2-2b-it'"
    )
    # strict: false skips it (and the other answers still import)
    data = load_import(
        parse_config(import_config(tiny_lm_dir, tmp_path / "run", {**source, "strict": False}))
    )
    assert data.skipped == 1 and len(data.answers) == 8


def test_score_not_a_number(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rows = [uf_row(0, uf_answers(0)), uf_row(1, uf_answers(1, c2__overall_score="N/A"))]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    with pytest.raises(DataError) as err:
        load(
            tiny_lm_dir,
            tmp_path,
            {"path": str(path), "preset": "ultrafeedback", "models": DATA_MODELS},
        )
    assert str(err.value) == (
        f"{path}: line 2: completions[2].overall_score: score 'N/A' is not a number"
    )


def test_duplicate_prompts(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rows = [uf_row(0, uf_answers(0)), uf_row(1, uf_answers(1)), uf_row(0, uf_answers(0))]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    with pytest.raises(DataError) as err:
        load(
            tiny_lm_dir,
            tmp_path,
            {"path": str(path), "preset": "ultrafeedback", "models": DATA_MODELS},
        )
    message = str(err.value)
    assert message.startswith(f"{path}: line 3: duplicate prompt 'imp-")
    assert message.endswith(f"(first at {path}: line 1)") and "\n" not in message


def test_model_in_fewer_than_two_rows(tiny_lm_dir: Path, tmp_path: Path) -> None:
    # Phi-3-mini answers the first row only (the second names it with a typo, the third
    # lacks it): a mapping slip, not data to rank teachers with
    rows = [uf_row(0, uf_answers(0)), uf_row(1, uf_answers(1, c2__model="Phi-3-mini-typo"))]
    rows.append(uf_row(2, uf_answers(2)[:2]))
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    with pytest.raises(DataError) as err:
        load(
            tiny_lm_dir,
            tmp_path,
            {"path": str(path), "preset": "ultrafeedback", "models": DATA_MODELS},
        )
    assert str(err.value) == (
        f"{path}: line 1: completions[2].response: model 'Phi-3-mini' (teacher "
        "'solver-quick') answers only this row; a teacher needs answers to at least two prompts"
    )


def test_prompt_id_clash(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """A data prompt whose id is also in `prompts` is that prompt: its text must match."""
    rows = [
        {"uuid": f"arith-0000{i}", "instruction": instruction(i)}
        | {m: answer(i, k) for k, m in enumerate(DATA_MODELS)}
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "zoo.jsonl", rows)
    responses = {t: m for m, t in DATA_MODELS.items()}
    source = {"path": str(path), "preset": "magpie-zoo", "responses": responses}
    cfg = parse_config(import_config(tiny_lm_dir, tmp_path / "run", source))
    with pytest.raises(DataError) as err:
        run_stage(Run.open(cfg), "prepare")
    assert str(err.value) == (
        f"{path}: line 1: instruction: prompt 'arith-00000' has another text in prompts "
        "(arithmetic)"
    )


def test_config_errors(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Errors of the config alone, and (`validate`) those of what a backend or signal needs."""

    def error(source: dict[str, Any], **overrides: Any) -> str:
        with pytest.raises(ConfigError) as err:
            validate(
                parse_config(import_config(tiny_lm_dir, tmp_path / "run", source, **overrides))
            )
        return str(err.value)

    assert "set one layout" in error({"path": "zoo.parquet", "preset": "magpie-zoo"})
    assert "calibration.source.models: unknown teacher 'gpt4'" in error(
        {"path": "uf.jsonl", "preset": "ultrafeedback", "models": {"gpt-4": "gpt4"}}
    )
    assert error(
        {"path": "m.jsonl", "preset": "mixinstruct"},
        rewards={"quality": [{"kind": "imported"}]},
    ) == (
        "rewards.quality: kind `imported` needs a score in the data: set "
        "calibration.source.score_field (or `scores` per teacher)"
    )
    teachers = [{"name": n, "backend": "scripted", "model": n} for n in SOLVERS]
    no_source = tiny_run_config(
        tiny_lm_dir, tmp_path, teachers=[*teachers, {"name": "gpt4", "backend": "imported"}]
    )
    with pytest.raises(ConfigError) as err:
        validate(parse_config(no_source))
    assert str(err.value) == "teacher 'gpt4': backend `imported` needs calibration.source"
    no_source["teachers"] = teachers
    no_source["rewards"] = {"quality": [{"kind": "imported"}]}
    with pytest.raises(ConfigError) as err:
        validate(parse_config(no_source))
    assert str(err.value) == "rewards.quality: kind `imported` needs calibration.source"


def test_cli_import_bad_data_is_one_line(tiny_lm_dir: Path, tmp_path: Path) -> None:
    import yaml

    rows = [uf_row(0, uf_answers(0)), uf_row(1, uf_answers(1, c0__overall_score=[1]))]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    source = {"path": str(path), "preset": "ultrafeedback", "models": DATA_MODELS}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(import_config(tiny_lm_dir, tmp_path / "run", source)))
    result = CliRunner().invoke(app, ["import", str(config), "-q"], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {path}: line 2: completions[0].overall_score: score [1] is not a number"
    )

"""Several students in one run (`students:`): one calibration and one set of calibration
answers, per student its scores, router, routes and dataset, and their routers compared."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.cli import app
from persyn.config import ConfigError, parse_config
from persyn.pipeline import STAGES, run_pipeline
from persyn.store import read_jsonl

STUDENT_STAGES = [s for s in STAGES if s not in {"prepare", "calibrate"}]


def two_students(tiny_lm_dir: Path, wide_lm_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The tiny config with two students: the tiny LM and a wider one (other weights)."""
    data = tiny_run_config(tiny_lm_dir, run_dir)
    del data["student"]
    data["students"] = [
        {"name": "small", "model": str(tiny_lm_dir), "dtype": "float32", "max_length": 256},
        {"name": "wide", "model": str(wide_lm_dir), "dtype": "float32", "max_length": 256},
    ]
    return data


def generation_keys(run_dir: Path) -> dict[str, Counter[tuple[str, str]]]:
    """Per teacher, how often each (prompt, teacher config) row is in its log."""
    return {
        p.stem: Counter((r["prompt_id"], r["fp"]) for r in read_jsonl(p))
        for p in sorted((run_dir / "generations").glob("*.jsonl"))
    }


def routed(run_dir: Path, student: str) -> dict[str, str]:
    """The teacher a student's router sent each routed prompt to."""
    rows = read_jsonl(run_dir / "students" / student / "routes.jsonl")
    return {r["prompt_id"]: r["teacher"] for r in rows}


@pytest.fixture(scope="module")
def wide_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from persyn.demo.tiny_student import build_tiny_student

    return build_tiny_student(tmp_path_factory.mktemp("wide-lm"), hidden_size=48)


@pytest.fixture(scope="module")
def students_run(
    tiny_lm_dir: Path, wide_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("students") / "run"
    data = two_students(tiny_lm_dir, wide_lm_dir, run_dir)
    return data, run_dir, run_pipeline(parse_config(data))


def test_calibration_is_shared_and_answered_once(students_run) -> None:
    _, run_dir, _ = students_run
    calibration = json.loads((run_dir / "calibration.json").read_text())["calibration"]
    for stage in ("prepare", "calibrate"):
        assert (run_dir / "stages" / f"{stage}.json").exists()
    for teacher, keys in generation_keys(run_dir).items():
        # a model call appends one row: none was asked twice, by either student
        assert set(keys.values()) == {1}, teacher
        assert sum(pid in calibration for pid, _fp in keys) == len(calibration)
    for name in ("small", "wide"):
        folder = run_dir / "students" / name
        assert not (folder / "generations").exists() and not (folder / "prompts.jsonl").exists()
        assert sorted(p.stem for p in (folder / "stages").glob("*.json")) == sorted(STUDENT_STAGES)
        # quality does not depend on the student: scored once, at the top
        assert (folder / "scores" / "learnability.jsonl").exists()
        assert not (folder / "scores" / "quality.jsonl").exists()
    assert (run_dir / "scores" / "quality.jsonl").exists()
    calibrated = json.loads((run_dir / "stages" / "calibrate.json").read_text())
    assert all(t["generated"] + t["from_store"] > 0 for t in calibrated["teachers"].values())
    # the second student's `generate` asked only for the prompts its router sends to
    # another teacher than the first's did
    routes = [routed(run_dir, n) for n in ("small", "wide")]
    asked = [
        sum(t["generated"] + t["from_store"] for t in marker["teachers"].values())
        for marker in (
            json.loads((run_dir / "students" / n / "stages" / "generate.json").read_text())
            for n in ("small", "wide")
        )
    ]
    assert asked == [len(routes[0]), sum(routes[1][p] != routes[0][p] for p in routes[1])]


def test_each_student_has_its_router_routes_and_dataset(students_run) -> None:
    data, run_dir, summary = students_run
    prompts = len(read_jsonl(run_dir / "prompts.jsonl"))
    for name in ("small", "wide"):
        folder = run_dir / "students" / name
        assert (folder / "router" / "router.json").exists()
        routes = read_jsonl(folder / "routes.jsonl")
        assert routes and {r["teacher"] for r in routes} <= {t["name"] for t in data["teachers"]}
        rows = read_jsonl(folder / "dataset.jsonl") + read_jsonl(folder / "failed.jsonl")
        assert len(rows) == prompts
        assert (folder / "dataset" / "state.json").exists()
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["student"]["model"] == data["students"][name == "wide"]["model"]
        assert "students" not in saved
        dataset = read_jsonl(folder / "dataset.jsonl")
        assert summary["students"][name]["dataset_rows"] == len(dataset)
    # nothing of one student's at the top
    for name in ("routes.jsonl", "dataset.jsonl", "router", "rewards.jsonl"):
        assert not (run_dir / name).exists()


def test_comparison_in_the_top_summary(students_run) -> None:
    _, run_dir, summary = students_run
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    comparison = summary["comparison"]
    names = comparison["students"]
    assert names == ["small", "wide"]
    small, wide = (routed(run_dir, n) for n in names)
    assert comparison["routed_prompts"] == len(small) == len(wide)
    agreement = comparison["agreement"]
    for a in names:
        assert agreement[a][a] == 1.0
        assert sum(comparison["shares"][a].values()) == pytest.approx(1.0, abs=1e-3)
        for b in names:
            assert agreement[a][b] == agreement[b][a] and 0 <= agreement[a][b] <= 1
    same = sum(small[p] == wide[p] for p in small) / len(small)
    assert agreement["small"]["wide"] == pytest.approx(same, abs=1e-4)


def test_rerun_does_nothing(students_run) -> None:
    data, run_dir, summary = students_run
    before = generation_keys(run_dir)
    markers = {
        p: json.loads(p.read_text())["finished_at"]
        for p in run_dir.rglob("stages/*.json")
        if p.stem != "export"
    }
    assert run_pipeline(parse_config(data)) == summary
    assert generation_keys(run_dir) == before
    assert {p: json.loads(p.read_text())["finished_at"] for p in markers} == markers


def test_a_student_added_later_asks_only_for_its_new_routes(students_run, tmp_path: Path) -> None:
    data, run_dir, _ = students_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    stamps = {p: json.loads(p.read_text())["finished_at"] for p in copy.rglob("stages/*.json")}
    before = generation_keys(copy)
    third = {**data["students"][0], "name": "third", "max_length": 200}
    added = {**data, "run_dir": str(copy), "students": [*data["students"], third]}
    summary = run_pipeline(parse_config(added))
    assert summary["comparison"]["students"] == ["small", "third", "wide"]
    # the first two students and the shared stages are left as they were
    kept = {p: t for p, t in stamps.items() if p.stem != "export" or "students" in p.parts}
    assert {p: json.loads(p.read_text())["finished_at"] for p in kept} == kept
    after = generation_keys(copy)
    new = {t: set(after[t]) - set(before[t]) for t in after}
    routes = {n: routed(copy, n) for n in ("small", "wide", "third")}
    # no calibration answer, and only routes neither earlier student's router chose
    fresh = {
        (t, p)
        for p, t in routes["third"].items()
        if t not in (routes["small"][p], routes["wide"][p])
    }
    assert {(t, p) for t, keys in new.items() for p, _fp in keys} == fresh


def test_report_compares_the_students(students_run) -> None:
    from persyn.report.html import build_report

    _, run_dir, _ = students_run
    page = build_report(run_dir)
    text = page.read_text()
    assert "Students side by side" in text and "Agreement between routers" in text
    assert (page.parent / "students.png").exists()
    for name in ("small", "wide"):
        assert (run_dir / "students" / name / "report" / "report.html").exists()
        assert f"../students/{name}/report/report.html" in text


def test_inspect_a_students_folder(students_run) -> None:
    from rich.console import Console

    from persyn.report.inspect import inspect_run, print_inspection

    _, run_dir, _ = students_run
    found = inspect_run(run_dir / "students" / "wide")
    assert all(marker is not None for marker in found.stages.values())
    rows = {a.name: a.rows for a in found.artifacts}
    assert rows["prompts"] == 30 and rows["generations/tiny-llm"] > 0 and rows["routes"] > 0
    console = Console(record=True, width=200)
    print_inspection(found, console)
    assert "../../generations/tiny-llm.jsonl" in console.export_text()
    # the top folder: the shared stages, and how far each student is
    top = inspect_run(run_dir)
    assert top.students == {run_dir / "students" / n: [] for n in ("small", "wide")}
    console = Console(record=True, width=200)
    print_inspection(top, console)
    text = console.export_text()
    assert "student wide" in text and text.rstrip().endswith("all stages done")


def test_one_student_by_name(
    tiny_lm_dir: Path, wide_lm_dir: Path, students_run, tmp_path: Path
) -> None:
    """`persyn run --student NAME`: the shared stages and that student only; a name the
    config does not have is one line, before anything is written."""
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(two_students(tiny_lm_dir, wide_lm_dir, run_dir)))
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(config), "--student", "nobody", "-q"])
    assert bad.exit_code == 2, bad.output
    assert "--student nobody: unknown student" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    assert not run_dir.exists()
    # a one-stage command is for one student
    unnamed = runner.invoke(app, ["route", str(config), "-q"])
    assert unnamed.exit_code == 2 and "name one with --student" in unnamed.output
    assert not run_dir.exists()
    result = runner.invoke(app, ["run", str(config), "--student", "wide", "-q"])
    assert result.exit_code == 0, result.output
    assert "routers side by side" in result.output
    assert (run_dir / "students" / "wide" / "dataset.jsonl").exists()
    assert not (run_dir / "students" / "small").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["students"]) == ["wide"]
    assert summary["comparison"]["agreement"] == {"wide": {"wide": 1.0}}
    routed = runner.invoke(app, ["route", str(config), "--student", "wide", "-q"])
    assert routed.exit_code == 0 and "route: done" in routed.output
    # the same student's routes as in the two-student run: its router does not depend on
    # the other student
    _, both_dir, _ = students_run
    alone = read_jsonl(run_dir / "students" / "wide" / "routes.jsonl")
    together = read_jsonl(both_dir / "students" / "wide" / "routes.jsonl")
    assert [r["teacher"] for r in alone] == [r["teacher"] for r in together]


def test_students_config(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = two_students(tiny_lm_dir, tiny_lm_dir, tmp_path / "run")
    cfg = parse_config(data)
    assert cfg.student_names == ["small", "wide"]
    assert cfg.student.model == str(tiny_lm_dir)  # the first: the shared stages' reader
    assert cfg.for_student("wide").students == []
    with pytest.raises(ConfigError, match="unknown student; the config's are"):
        cfg.for_student("nobody")
    # a one-student config dumps as before: no `students` key in its fingerprints or card
    one = parse_config(tiny_run_config(tiny_lm_dir, tmp_path / "run"))
    assert "students" not in one.model_dump()
    with pytest.raises(ConfigError, match="the config has one student"):
        one.for_student("small")
    twice = {**data, "students": [data["students"][0], data["students"][0]]}
    with pytest.raises(ConfigError, match=r"students: student name 'small' is used twice"):
        parse_config(twice)
    both = {**data, "student": {"model": "other"}}
    with pytest.raises(ConfigError, match=r"`student` .* or `students` .*, not both"):
        parse_config(both)
    with pytest.raises(ConfigError, match=r"students\.0\.name"):
        parse_config({**data, "students": [{**data["students"][0], "name": "a/b"}]})


@pytest.mark.parametrize("command", ["train-student", "evaluate", "experiment"])
def test_student_commands_refuse_several_students(
    tiny_lm_dir: Path, tmp_path: Path, command: str
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(two_students(tiny_lm_dir, tiny_lm_dir, tmp_path / "run")))
    result = CliRunner().invoke(app, [command, str(config), "-q"])
    assert result.exit_code == 2
    assert f"persyn {command}: not yet for a config with several students" in result.output

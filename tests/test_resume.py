"""A run killed with SIGKILL in the middle of a stage resumes: every row exactly once, and
the same dataset as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from persyn.config import parse_config
from persyn.demo.solvers import solver_concise
from persyn.pipeline import run_pipeline
from persyn.teachers.base import Prompt

TESTS = Path(__file__).parent
PERSYN = str(Path(sys.executable).parent / "persyn")  # the installed console script


def slow_answer(prompt: Prompt) -> str:
    """A deterministic scripted teacher slow enough to be killed mid-stage."""
    time.sleep(0.3)
    return f"Slowly: {solver_concise(prompt)}"


def resume_config(tiny_lm_dir: Path, run_dir: Path) -> dict[str, Any]:
    lm = {"model": str(tiny_lm_dir), "dtype": "float32"}
    return {
        "name": "resume",
        "run_dir": str(run_dir),
        "student": {**lm, "max_length": 256},
        "teachers": [
            {
                "name": "slow",
                "backend": "scripted",
                "model": "test_resume:slow_answer",
                "batch_size": 1,
            },
            {"name": "solver-verbose", "backend": "scripted", "model": "solver-verbose"},
            {"name": "solver-quick", "backend": "scripted", "model": "solver-quick"},
        ],
        "prompts": {"builtin": "arithmetic", "num_prompts": 30, "seed": 2},
        "calibration": {"size": 12, "seed": 0},
        "rewards": {"quality": [{"kind": "math"}]},
        "router": {"epochs": 10, "val_fraction": 0.25},
    }


def keys_once(path: Path, fields: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The keys of a row log, failing if any key was written twice."""
    keys = [tuple(json.loads(line)[f] for f in fields) for line in path.read_text().splitlines()]
    assert len(keys) == len(set(keys)), f"{path.name}: a row was written twice"
    return keys


@pytest.fixture(scope="module")
def uninterrupted(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(TESTS))  # `test_resume:slow_answer` is importable as the CLI's is
    run_dir = tmp_path_factory.mktemp("resume") / "clean"
    run_pipeline(parse_config(resume_config(tiny_lm_dir, run_dir)))
    return run_dir


def kill_when(config: Path, log: Path, rows: int, tmp_path: Path) -> None:
    """Start `persyn run`, SIGKILL it once `log` has `rows` rows (mid-stage)."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [PERSYN, "run", str(config), "--quiet"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= rows:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stdout.read()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def resume(config: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [PERSYN, "run", str(config), "--quiet"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("stage", "rows"),
    [("calibrate", 4), pytest.param("generate", 15, marks=pytest.mark.slow)],
)
def test_sigkill_mid_generation_then_resume(
    stage: str, rows: int, uninterrupted: Path, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """`slow` answers 12 calibration prompts, then the prompts routed to it: killed after 4
    rows it dies in `calibrate`; after 15 rows in `generate` (if the router sends it any)."""
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(resume_config(tiny_lm_dir, run_dir)))
    log = run_dir / "generations" / "slow.jsonl"
    routed_to_slow = sum(
        json.loads(line)["teacher"] == "slow"
        for line in (uninterrupted / "routes.jsonl").read_text().splitlines()
    )
    if stage == "generate" and routed_to_slow < 4:
        pytest.skip(f"the router sent only {routed_to_slow} prompts to `slow`")
    kill_when(config, log, rows, tmp_path)
    assert not (run_dir / "stages" / f"{stage}.json").exists()  # killed inside the stage
    resume(config, tmp_path)

    clean_log = uninterrupted / "generations" / "slow.jsonl"
    assert sorted(keys_once(log, ("prompt_id", "fp"))) == sorted(
        keys_once(clean_log, ("prompt_id", "fp"))
    )
    keys_once(run_dir / "scores" / "learnability.jsonl", ("prompt_id", "teacher", "fp"))
    for artifact in ("dataset.jsonl", "rewards.jsonl", "routes.jsonl"):
        assert (run_dir / artifact).read_text() == (uninterrupted / artifact).read_text(), artifact


def test_torn_rows_in_scores_and_routes_resume(
    uninterrupted: Path, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """A kill while a score or router-score row is half written: the torn row is dropped and
    recomputed once; the stage markers after it are gone, as after a real kill."""
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(uninterrupted, run_dir)
    for log in ("scores/learnability.jsonl", "router/scores.jsonl"):
        text = (run_dir / log).read_text()
        lines = text.splitlines(keepends=True)
        # keep half the rows plus half of the next one
        keep = "".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:20]
        (run_dir / log).write_text(keep)
    for stage in ("score", "train-router", "route", "generate", "export"):
        (run_dir / "stages" / f"{stage}.json").unlink()
    run_pipeline(parse_config(resume_config(tiny_lm_dir, run_dir)))
    keys_once(run_dir / "scores" / "learnability.jsonl", ("prompt_id", "teacher", "fp"))
    keys_once(run_dir / "router" / "scores.jsonl", ("prompt_id", "fp"))
    for artifact in ("dataset.jsonl", "rewards.jsonl", "routes.jsonl"):
        assert (run_dir / artifact).read_text() == (uninterrupted / artifact).read_text(), artifact

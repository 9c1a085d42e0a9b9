"""README's "Bring your own prompts and teachers" section, run as a user would (issue 24.7):
its `bash byo` blocks verbatim, in order, in an empty directory, and every teacher of its
`yaml byo-teachers` block checked as `persyn validate` checks one. The README cannot drift
from what persyn accepts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from persyn.config.base import TeacherConfig
from persyn.teachers.base import BACKENDS

ROOT = Path(__file__).parent.parent
SECTION = "## Bring your own prompts and teachers"


def section_blocks(info: str) -> list[str]:
    """The fenced blocks of the section whose info string is `info` (e.g. `bash byo`)."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", section, re.S | re.M)


def test_section_commands_run_verbatim_on_a_fresh_directory(tmp_path: Path) -> None:
    blocks = section_blocks("bash byo")
    assert len(blocks) >= 4  # prompts, teachers, config, commands
    # `persyn` on PATH is this checkout's, whatever PYTHONPATH the commands set.
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "persyn"
    shim.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT / 'src')!r})\n"
        "from persyn.cli import app\nsys.argv[0] = 'persyn'\nsys.exit(app())\n"
    )
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSYN")}
    env.update(PATH=f"{shims}:{env['PATH']}", COLUMNS="250", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # what the section says the run shows and leaves behind
    assert "prompts with a quality signal: math 8/8, instruction 4/4" in output
    assert "too few to judge" in output and "does not beat" not in output
    assert "all stages done" in output
    summary = json.loads((work / "runs" / "byo" / "summary.json").read_text())
    assert summary["dataset_rows"] == 12 and summary["failed_rows"] == 0
    rows = [json.loads(line) for line in (work / "runs/byo/dataset.jsonl").open()]
    assert {r["teacher"] for r in rows} <= {"steps", "terse"}
    # the math prompts go to the teacher whose answer is right and shows its working
    assert all(r["teacher"] == "steps" for r in rows if r["kind"] == "math")


def test_every_teacher_example_is_a_valid_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = section_blocks("yaml byo-teachers")
    teachers = yaml.safe_load(block)["teachers"]
    assert {t["backend"] for t in teachers} == {"hf", "vllm", "openai", "imported"}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # the hosted example names this variable
    for entry in teachers:
        cfg = TeacherConfig.model_validate(entry)
        # Constructing a backend loads nothing and checks its options (an unknown key is
        # refused); the class, not `backend_class`, so a missing extra (vLLM) is no failure.
        BACKENDS.load(cfg.backend)(cfg)

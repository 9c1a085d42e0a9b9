"""Registries are the only list of what exists: names are checked against them, and other
packages join them through Python entry points, with no change to persyn."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from persyn.artifacts import RunArtifacts
from persyn.config import ConfigError, parse_config
from persyn.pipeline import validate
from persyn.router.routers import ROUTERS, RandomRouter

PLUGIN_MODULE = '''
from typing import ClassVar

from persyn.rewards.base import QualityScorer, Sample, SignalScore
from persyn.teachers.base import Generation, Prompt, Teacher


class EchoTeacher(Teacher):
    """Answers with the prompt's id and its `model`, loading nothing."""

    model_required: ClassVar[bool] = False

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        return [Generation(p.id, f"plug-in {self.cfg.model or 'echo'} answers {p.id}")
                for p in prompts]


class LengthQuality(QualityScorer):
    """Longer is better, up to 100 characters."""

    name = "{quality}"

    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        return [SignalScore(min(1.0, len(response) / 100)) for _, response in samples]
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"

[tool.setuptools]
py-modules = ["{module}"]

[project.entry-points."persyn.teachers"]
{backend} = "{module}:EchoTeacher"

[project.entry-points."persyn.quality"]
{quality} = "{module}:LengthQuality"
"""


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
    )


def test_plugin_backend_and_quality_signal_run_a_pipeline(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    # Unique names: sessions sharing the virtual environment may run this test at once.
    tag = uuid.uuid4().hex[:8]
    dist, module = f"persyn-test-plugin-{tag}", f"persyn_test_plugin_{tag}"
    backend, quality = f"echo-{tag}", f"length-{tag}"
    package = tmp_path / "plugin"
    package.mkdir()
    names = {"dist": dist, "module": module, "backend": backend, "quality": quality}
    (package / "pyproject.toml").write_text(PYPROJECT.format(**names))
    (package / f"{module}.py").write_text(PLUGIN_MODULE.replace("{quality}", quality))
    run_dir = tmp_path / "run"
    config = {
        "run_dir": str(run_dir),
        "student": {"model": str(tiny_lm_dir), "dtype": "float32", "max_length": 256},
        "teachers": [
            {"name": "plugged", "backend": backend, "model": "parrot"},
            {"name": "plugged-bare", "backend": backend},  # the backend needs no `model`
            {"name": "solver", "backend": "scripted", "model": "solver-quick"},
        ],
        "prompts": {"builtin": "arithmetic", "num_prompts": 12, "seed": 0},
        "calibration": {"size": 8},
        "rewards": {"quality": [{"kind": "math"}, {"kind": quality}]},
        "router": {"kind": "best-fixed", "val_fraction": 0.0},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-c", "from persyn.cli import app; app()"]
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(package))
    try:
        done = subprocess.run(
            [*cli, "run", str(path), "-q"], capture_output=True, text=True, timeout=300
        )
    finally:
        pip("uninstall", "-y", dist)
    assert done.returncode == 0, done.stdout + done.stderr
    store = RunArtifacts(run_dir)
    calibration = store.split().calibration
    answers: dict[tuple[str, str], str] = {}
    for teacher, model in (("plugged", "parrot"), ("plugged-bare", "echo")):
        rows = {r["prompt_id"]: r["text"] for r in store.generation_log(teacher).rows.values()}
        assert set(calibration) <= set(rows)
        assert all(rows[p] == f"plug-in {model} answers {p}" for p in rows)
        answers.update({(teacher, p): text for p, text in rows.items()})
    scored = [r for r in store.score_log("quality").rows.values() if r["teacher"] != "solver"]
    assert {(r["teacher"], r["prompt_id"]) for r in scored} == {
        (t, p) for t in ("plugged", "plugged-bare") for p in calibration
    }
    for row in scored:
        text = answers[row["teacher"], row["prompt_id"]]
        assert row["signals"][quality] == pytest.approx(min(1.0, len(text) / 100))
    # The plug-in is gone with its package: its names are unknown again.
    with pytest.raises(ConfigError, match=f"unknown backend '{backend}'"):
        validate(parse_config(config))


def fake_distribution(where: Path, group: str, entries: dict[str, str]) -> None:
    """An installed distribution as `importlib.metadata` finds it on `sys.path`."""
    info = where / "persyn_fake_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: persyn-fake-plugin\n")
    lines = [f"[{group}]", *(f"{name} = {target}" for name, target in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


ROUTER_MODULE = """
from persyn.router.routers import RandomRouter

class Coin(RandomRouter):
    name = "coin"

class Misnamed(RandomRouter):
    pass

class NotARouter:
    name = "plain"
"""


def test_registry_lists_and_loads_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_routers.py").write_text(ROUTER_MODULE)
    entries = {
        "coin": "fake_routers:Coin",
        "misnamed": "fake_routers:Misnamed",
        "plain": "fake_routers:NotARouter",
        "gone": "fake_routers:Nowhere",
    }
    fake_distribution(tmp_path, "persyn.routers", entries)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert set(entries) | {"bradley-terry", "random"} <= set(ROUTERS.names())
    assert "coin" in ROUTERS and ROUTERS.load("coin").__name__ == "Coin"
    ROUTERS.check("coin", "router.kind")
    assert ROUTERS.load("random") is RandomRouter  # built-ins are found without a scan
    errors = {}
    for name in ("misnamed", "plain", "gone"):
        with pytest.raises(ConfigError) as err:
            ROUTERS.load(name)
        errors[name] = str(err.value)
    assert errors == {
        "misnamed": "router 'misnamed': Misnamed must set name = 'misnamed', its registry key",
        "plain": "router 'plain': NotARouter is not a subclass of persyn.router.routers.Router",
        "gone": "router 'gone' (fake_routers:Nowhere) could not be imported: module "
        "'fake_routers' has no attribute 'Nowhere'",
    }


def test_plugin_cannot_take_a_builtin_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(tmp_path, "persyn.routers", {"random": "fake_routers:Coin"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        ROUTERS.names()
    assert str(err.value) == (
        "entry point random = 'fake_routers:Coin' (group persyn.routers) takes the name of a "
        "built-in router; rename it"
    )

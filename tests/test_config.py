"""Config errors: one line naming the file and key, raised before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from persyn.cli import app
from persyn.config import ConfigError, load_config
from persyn.pipeline import validate


def base_config(tmp_path: Path) -> dict[str, Any]:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    return {
        "run_dir": str(tmp_path / "run"),
        "student": {"model": str(model_dir)},
        "teachers": [
            {"name": "a", "backend": "scripted", "model": "solver-verbose"},
            {"name": "b", "backend": "scripted", "model": "solver-quick"},
        ],
        "prompts": {"builtin": "demo-mix", "num_prompts": 10},
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def config_error(tmp_path: Path, data: dict[str, Any]) -> str:
    """The error of loading and validating `data`; fails the test if a model gets loaded."""
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        validate(load_config(path))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config checks must come before any model loads: loading one fails the test. The
    transformers entry points are patched (not persyn's helpers, which modules may have
    imported by name and would keep after the test)."""
    import transformers

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a model was loaded while checking the config")

    for auto in ("AutoModel", "AutoModelForCausalLM", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", refuse)


def test_valid_config_passes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base_config(tmp_path)))
    validate(cfg)
    assert cfg.rewards.alpha == 0.4 and cfg.teacher_names == ["a", "b"]


def test_unknown_key(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["rewards"] = {"alpah": 0.3}
    message = config_error(tmp_path, data)
    assert message.startswith(f"{tmp_path / 'run.yaml'}: rewards.alpah")
    assert "rewards.alpah" in message and "Extra inputs are not permitted" in message


def test_bad_alpha(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["rewards"] = {"alpha": 1.5}
    assert "rewards.alpha" in config_error(tmp_path, data)


def test_duplicate_teacher(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["teachers"][1]["name"] = "a"
    assert "teacher name 'a' is used twice" in config_error(tmp_path, data)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "teachers.1.backend",
            "gpt-magic",
            "teachers[1].backend: unknown backend 'gpt-magic'; choose one of ['hf', 'imported', "
            "'openai', 'scripted', 'vllm']",
        ),
        ("teachers.1.model", "", "teachers[1]: teacher 'b': `model` is required"),
        (
            "rewards.quality",
            [{"kind": "math"}, {"kind": "vibes"}],
            "rewards.quality[1].kind: unknown quality signal 'vibes'; choose one of ['ifeval', "
            "'imported', 'judge', 'math', 'reward_model']",
        ),
        (
            "router.kind",
            "oracle",
            "router.kind: unknown router 'oracle'; choose one of ['best-fixed', 'bradley-terry', "
            "'knn', 'lm-bradley-terry', 'mf', 'random']",
        ),
        (
            "routing.kind",
            "greedy",
            "routing.kind: unknown routing policy 'greedy'; choose one of ['argmax', 'budget', "
            "'sample']",
        ),
        (
            "executor.kind",
            "slurm",
            "executor.kind: unknown executor 'slurm'; choose one of ['local', 'ray']",
        ),
        (
            "rewards.quality",
            [{"kind": "judge", "options": {"teacher": {"backend": "oracle", "model": "m"}}}],
            "rewards.quality[judge].options.teacher.backend: unknown backend 'oracle'; choose "
            "one of ['hf', 'imported', 'openai', 'scripted', 'vllm']",
        ),
    ],
)
def test_unknown_registry_names(tmp_path: Path, key: str, value: Any, message: str) -> None:
    """To the config a name is a plain string; `validate` checks it against its registry."""
    data = base_config(tmp_path)
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[leaf] = value
    assert config_error(tmp_path, data) == message


def test_missing_model_path(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["teachers"].append(
        {"name": "c", "backend": "hf", "model": str(tmp_path / "no-such-model")}
    )
    message = config_error(tmp_path, data)
    assert "teachers[2].model" in message and "does not exist" in message


def test_missing_student_path(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["student"]["model"] = "./nowhere/student"
    assert "student.model" in config_error(tmp_path, data)


def test_unknown_scripted_function(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["teachers"][0]["model"] = "solver_that_does_not_exist"
    message = config_error(tmp_path, data)
    assert message.startswith("teacher 'a': scripted model 'solver_that_does_not_exist'")
    assert "module:function" in message


def test_unknown_teacher_in_routing(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["routing"] = {"kind": "budget", "max_share": {"zed": 0.5}}
    assert "routing.max_share: unknown teacher 'zed'" in config_error(tmp_path, data)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nteachers: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ invalid YAML"):
        load_config(path)


def test_set_override(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base_config(tmp_path)), {"rewards.alpha": 0.7})
    assert cfg.rewards.alpha == 0.7


def test_cli_prints_one_line(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["rewards"] = {"alpha": -1}
    result = CliRunner().invoke(app, ["validate", str(write(tmp_path, data))])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "rewards.alpha" in lines[0], result.output

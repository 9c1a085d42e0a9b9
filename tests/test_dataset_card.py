"""The dataset card written by export: Hub front matter, shares, statistics, provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from conftest import tiny_run_config
from huggingface_hub import DatasetCard

from persyn.artifacts import RunArtifacts
from persyn.config import parse_config
from persyn.pipeline import run_pipeline
from persyn.report.card import build_card, reward_statistics
from persyn.store import read_jsonl


@pytest.fixture(scope="module")
def run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("card-run")
    config = tiny_run_config(tiny_lm_dir, root / "run")
    # Greedy, the random tiny LM repeats a newline (an empty answer); sampling gives text.
    config["teachers"][0]["generation"] = {"max_new_tokens": 8, "temperature": 1.0}
    run_pipeline(parse_config(config))
    return config, root / "run"


def test_export_writes_a_hub_card(run: tuple[dict[str, Any], Path]) -> None:
    config, run_dir = run
    card = DatasetCard.load(run_dir / "dataset" / "README.md")
    meta = card.data.to_dict()
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"
    provenance = meta["persyn"]
    assert provenance["run"] == "tiny"
    assert [t["name"] for t in provenance["teachers"]] == [t["name"] for t in config["teachers"]]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert provenance["generations"] == summary["generations"]
    assert provenance["alpha"] == 0.4


def test_card_does_not_break_the_datasets_folder(run: tuple[dict[str, Any], Path]) -> None:
    _, run_dir = run
    loaded = datasets.load_from_disk(str(run_dir / "dataset"))
    assert len(loaded) == len(read_jsonl(run_dir / "dataset.jsonl"))


def test_card_body_has_shares_statistics_and_config(run: tuple[dict[str, Any], Path]) -> None:
    _, run_dir = run
    text = (run_dir / "dataset" / "README.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    for teacher, share in summary["dataset_share"].items():
        assert f"| {teacher} | {share:.1%} |" in text
    assert "```yaml\nname: tiny\n" in text
    assert "Be brief." in text  # the teacher's system prompt is part of the provenance


def test_reward_statistics_match_the_rewards(run: tuple[dict[str, Any], Path]) -> None:
    _, run_dir = run
    rewards = read_jsonl(run_dir / "rewards.jsonl")
    names = json.loads((run_dir / "rewards_meta.json").read_text())["teachers"]
    stats = reward_statistics(RunArtifacts(run_dir).rewards())
    assert sum(s["oracle_share"] for s in stats.values()) == pytest.approx(1.0, abs=1e-3)
    first = [r["quality"][0] for r in rewards if r["quality"][0] is not None]
    assert stats[names[0]]["quality_mean"] == pytest.approx(sum(first) / len(first), abs=1e-4)


def test_secrets_in_options_are_redacted(run: tuple[dict[str, Any], Path]) -> None:
    config, run_dir = run
    config = json.loads(json.dumps(config))
    config["teachers"][0]["options"] = {
        "api_key": "sk-do-not-publish",
        "headers": {"Authorization": "Bearer do-not-publish"},
        "timeout": 30,
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    text = build_card(parse_config(config), summary, RunArtifacts(run_dir).rewards())
    assert "do-not-publish" not in text
    assert "timeout: 30" in text

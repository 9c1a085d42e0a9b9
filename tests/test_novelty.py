"""Novelty and confidence of routed prompts: the pure functions, and the fields a run
writes into routes.jsonl, the dataset's provenance, summary.json, `persyn inspect` and
the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_run_config
from rich.console import Console

from persyn.config import parse_config
from persyn.method import confidence, novelty, novelty_threshold
from persyn.pipeline import Run, run_pipeline, run_stage
from persyn.stages.common import StageError
from persyn.stages.route import route
from persyn.store import read_jsonl


def test_a_calibration_prompt_has_no_novelty_and_an_unrelated_one_has_more() -> None:
    rng = np.random.default_rng(0)
    # the calibration prompts span the first four dimensions; an unrelated text the others
    reference = np.hstack([np.abs(rng.normal(size=(20, 4))), np.zeros((20, 4))])
    close = reference[:3] * 2.0  # the same directions, another length
    far = np.hstack([np.zeros((3, 4)), np.abs(rng.normal(size=(3, 4)))])
    assert np.allclose(novelty(close, reference, k=1), 0.0, atol=1e-6)
    assert np.allclose(novelty(far, reference, k=3), 1.0)  # orthogonal to every one
    assert novelty(close, reference, k=100).shape == (3,)  # k beyond the references: all
    assert np.isnan(novelty(close, reference[:0], k=3)).all()


def test_threshold_is_the_quantile_of_the_heldout_novelty() -> None:
    heldout = np.linspace(0.0, 1.0, 101)
    assert novelty_threshold(heldout, 0.95) == pytest.approx(0.95)
    assert novelty_threshold(np.array([np.nan]), 0.95) is None


def test_confidence_is_the_top1_win_probability_over_the_runner_up() -> None:
    scores = np.array([[0.0, 0.0, -3.0], [2.0, 0.0, -1.0]])
    assert confidence(scores) == pytest.approx([0.5, 1 / (1 + np.exp(-2.0))])
    assert confidence(np.array([[4.0]])) == pytest.approx([1.0])


@pytest.fixture(scope="module")
def tiny_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("novelty") / "run"
    run_pipeline(parse_config(tiny_run_config(tiny_lm_dir, run_dir)))
    return run_dir


def test_out_of_family_prompts_are_more_novel(tiny_run: Path) -> None:
    from persyn.router.routers import Router

    router = Router.load(tiny_run / "router")
    assert router.novelty_reference is not None
    split = json.loads((tiny_run / "calibration.json").read_text())
    by_id = {p["id"]: p for p in read_jsonl(tiny_run / "prompts.jsonl")}
    in_family = [by_id[i]["messages"][-1]["content"] for i in split["routed"]]
    foreign = [
        "Schreibe ein Gedicht über den Herbst im Schwarzwald, ohne Reime.",
        "Explique la photosynthèse à un enfant de cinq ans, en français.",
        "¿Cuál es la capital de Mongolia y por qué se fundó allí?",
        "用三句话描述长城的历史。",
    ]
    assert router.novelty(foreign).mean() > router.novelty(in_family).mean()


def test_fields_in_routes_provenance_summary(tiny_run: Path) -> None:
    routes = read_jsonl(tiny_run / "routes.jsonl")
    assert routes and all(0 <= r["novelty"] <= 2 for r in routes)
    assert all(0.5 <= r["confidence"] <= 1 for r in routes)
    by_id = {r["prompt_id"]: r for r in routes}
    for row in read_jsonl(tiny_run / "dataset.jsonl"):
        provenance = row["provenance"]
        if row["selected_by"] == "oracle":
            assert provenance["novelty"] is None and provenance["confidence"] is None
        else:
            assert provenance["novelty"] == by_id[row["id"]]["novelty"]
            assert provenance["confidence"] == by_id[row["id"]]["confidence"]
    from datasets import load_from_disk

    folder = load_from_disk(str(tiny_run / "dataset"))
    assert {"novelty", "confidence"} <= set(folder.features["provenance"])
    summary = json.loads((tiny_run / "summary.json").read_text())
    threshold = summary["novelty_threshold"]
    assert threshold is not None and 0 <= threshold <= 2
    novel = np.mean([r["novelty"] > threshold for r in routes])
    assert summary["share_novel"] == pytest.approx(novel, abs=1e-5)
    assert set(summary["confidence_quantiles"]) == {"p10", "p50", "p90"}


def test_inspect_and_report_show_novelty(tiny_run: Path, tmp_path: Path) -> None:
    from persyn.report.html import build_report
    from persyn.report.inspect import inspect_run, print_inspection

    console = Console(record=True, width=300)
    print_inspection(inspect_run(tiny_run), console)
    assert "novel (unlike the calibration prompts)" in console.export_text()
    page = build_report(tiny_run, tmp_path / "report").read_text()
    assert "Novelty of routed prompts" in page and "are novel" in page
    assert (tmp_path / "report" / "novelty.png").is_file()


def test_route_refuses_a_router_without_its_novelty_reference(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    config: dict[str, Any] = tiny_run_config(tiny_lm_dir, tmp_path / "run")
    run = Run.open(parse_config(config))
    run_stage(run, "train-router")
    (tmp_path / "run" / "router" / "novelty.npz").unlink()  # as an earlier persyn left it
    # (the pipeline itself retrains a router whose files changed since it finished; a run
    # from before novelty has no such file among its recorded outputs)
    with pytest.raises(StageError, match="rerun `persyn train-router"):
        route(run)

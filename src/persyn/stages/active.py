"""Active calibration (`routing.uncovered: calibrate`), run by `route` before it routes.

Each round: route the prompts still routed with the current router; pick uncovered ones
within the round's share of `routing.active_budget`, spread over the router's encoder
space (`select_uncovered` orders them, `representative` picks those that bring the
uncovered prompts closest to a calibration prompt, so one round reaches every unseen
region; a router without an encoder space takes them in `select_uncovered`'s order);
every teacher that can generate answers them (the generation logs: nothing is asked
twice); they are scored like calibration prompts (the score logs) and join the
calibration set (the router's train split); the router is trained again
(`fit_and_save`, into `active/round-<r>/`) and routes the rest: the prompts the first
router covered keep its teacher (`keep_covered`; retrained on a few unseen prompts, the
router moved some covered prompts to worse teachers), and so do the uncovered ones with
no added prompt among their nearest calibration prompts (`near_any`: the round taught
the router nothing about them either); the others take the teacher of highest reward on
their nearest scored prompts, added ones included, the nearest weighing most, less
`routing.vote_caution` times its spread there (`neighbour_vote`; retrained on a handful
of added prompts, the router was often sure of teachers that the scored prompts right next
to a prompt show are wrong, and a count of those prompts' best teachers ignored how far
below the others were). Where no scored prompt weighs on one, the new router's teacher.
The vote's kernel width is `routing.vote_width`, or under `auto` chosen each round by
leave-one-out on the added prompts, each voted on by the other scored prompts
(`vote_width_loss`, `vote_width`), and recorded with the round. Under `routing.budget`
or `max_share`, which bind the assignment as a whole, the new router's assignment stands.
Rounds stop at `routing.active_rounds`, when no prompt is uncovered, or when the budget
is spent. Each round's router is loaded in this process for the uncovered prompts'
embeddings, in the space of that round's novelty reference (`_router`).

Resumable: a round's prompts are recorded (`active/rounds.json`) before any teacher is
asked, so a killed round picks the same prompts again, finds their answers and scores in
the row logs, and reuses a router already saved for it. The added prompts' rewards
(`active/rewards.jsonl`) make them calibration prompts for `export`: the oracle picks their
answers."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import RouterCheckpoint
from persyn.config import fingerprint
from persyn.method import (
    VOTE_WIDTHS,
    active_prompt_budget,
    charge_failures,
    failure_reward,
    keep_covered,
    near_any,
    neighbour_vote,
    representative,
    select_uncovered,
    vote_width,
    vote_width_loss,
)
from persyn.progress import log
from persyn.router.routers import Router
from persyn.stages.common import generate_rows, generating_teachers, routable_columns
from persyn.stages.routing import Routing, route_prompts
from persyn.stages.score import reward_table, score_responses
from persyn.stages.train_router import fit_and_save

if TYPE_CHECKING:
    from pathlib import Path

    from persyn.artifacts import RewardTable
    from persyn.run import Run


def calibrate_uncovered(run: Run, router_fp: str) -> tuple[Routing, list[dict[str, Any]]]:
    """Run the rounds; returns the routing of the prompts left with the last router, and
    per round: prompts added, the share of the routed prompts uncovered before and after,
    how many of the prompts still routed changed teacher, its router's fingerprint, and
    (where the neighbour vote ran) the vote's width, its leave-one-out losses under
    `auto`, and how many routes the vote decided."""
    cfg = run.cfg
    files = run.store.active()
    split = run.store.split()
    policy = cfg.routing.model_dump(mode="json", exclude={"fallback_tries"})
    key = fingerprint(router_fp, policy)
    record = files.rounds()
    if record is None or record.get("key") != key:
        record = {"key": key, "rounds": []}  # another config: its rows stay in the logs
    teachers = [cfg.teacher(t) for t in generating_teachers(cfg)]
    capacity = active_prompt_budget(cfg.routing.active_budget, len(split.routed), len(teachers))
    router_dir, fp = run.store.router_dir(), router_fp
    added: list[str] = []
    rounds: list[dict[str, Any]] = record["rounds"]
    first = routing = route_prompts(run, split.routed, router_dir, fp)
    first_teacher = dict(zip(first.ids, first.choice.tolist(), strict=True))
    first_uncovered = dict(zip(first.ids, first.uncovered.tolist(), strict=True))
    routers: dict[Path, Router] = {}  # loaded for their encoder space, once per round
    for r in range(cfg.routing.active_rounds):
        left = capacity - len(added)
        if r < len(rounds):
            picked = rounds[r]["added"]  # a resumed round: the prompts it chose
        else:
            share = math.ceil(left / (cfg.routing.active_rounds - r))
            chosen = _spread(run, routing, router_dir, share, routers)
            if not len(chosen):
                break  # everything covered, or the budget spent
            picked = [routing.ids[i] for i in chosen]
            rounds.append(
                {
                    "round": r + 1,
                    "added": picked,
                    "uncovered_before": _share(routing),
                    "generations": len(picked) * len(teachers),
                }
            )
            files.write_rounds(record)
        for t in teachers:
            generate_rows(run, t, picked, "route")
        added += picked
        ids = split.calibration + added
        learn, qual, _ = score_responses(run, ids)
        table = reward_table(run, ids, learn, qual)
        files.write_rewards(table)
        fp, router_dir = fingerprint(router_fp, added), files.router_dir(r + 1)
        if (
            rounds[r].get("router_fp") != fp
            or not files.router_checkpoint(r + 1).meta_path.exists()
        ):
            splits = (split.router_train + added, split.router_val, split.router_test)
            fit_and_save(run, table, splits, router_dir)
            rounds[r]["router_fp"] = fp
            files.write_rounds(record)
        before = dict(zip(routing.ids, routing.choice.tolist(), strict=True))
        kept = [pid for pid in split.routed if pid not in set(added)]
        routing = route_prompts(run, kept, router_dir, fp)
        if cfg.routing.budget is None and not cfg.routing.max_share:
            # (a budget or share cap binds the assignment as a whole: the new one stands)
            was_uncovered = np.array([first_uncovered[pid] for pid in kept], dtype=bool)
            vote, taught, vote_record = _neighbours(
                run, routing, was_uncovered, table, added, router_dir, routers
            )
            rounds[r].update(vote_record)
            decided = np.where(vote >= 0, vote, routing.choice)
            # only `taught` prompts (uncovered, an added prompt among their nearest) move:
            # the retrained router learnt nothing new about the others
            rounds[r]["neighbours_decided"] = int((taught & (decided != routing.choice)).sum())
            choice = keep_covered(
                np.array([first_teacher[pid] for pid in kept], dtype=int), taught, decided
            )
            routing = dataclasses.replace(routing, choice=choice)
        rounds[r]["uncovered_after"] = _share(routing)
        rounds[r]["routes_changed"] = sum(
            before[pid] != c for pid, c in zip(kept, routing.choice.tolist(), strict=True)
        )
        files.write_rounds(record)
        log(
            f"route: active calibration round {r + 1}: {len(picked)} prompts added, "
            f"uncovered {rounds[r]['uncovered_before']:.1%} -> {rounds[r]['uncovered_after']:.1%}"
            f", {rounds[r]['routes_changed']} routes changed; the neighbour vote"
            + (f" (width {rounds[r]['vote_width']:g})" if rounds[r].get("vote_width") else "")
            + f" overrode the new router on {rounds[r].get('neighbours_decided', 0)}"
        )
    return routing, rounds


def _spread(
    run: Run, routing: Routing, router_dir: Path, share: int, routers: dict[Path, Router]
) -> np.ndarray:
    """Indices into `routing.ids` of up to `share` uncovered prompts to calibrate,
    representative of the uncovered prompts beside the current router's calibration
    prompts (its novelty reference: the added prompts included)."""
    cfg = run.cfg
    candidates = select_uncovered(
        routing.novelty,
        routing.threshold,
        routing.confidence,
        cfg.routing.uncovered_confidence,
        len(routing.ids),
    )
    reference = RouterCheckpoint(router_dir).novelty()
    if reference is None or len(candidates) <= share:
        return candidates[:share]  # no encoder space, or every candidate fits
    by_id = run.prompts_by_id()
    points = _router(run, router_dir, routers).embeddings(
        [by_id[routing.ids[i]].text for i in candidates]
    )
    assert points is not None  # the router has a novelty reference: an encoder space
    return candidates[representative(points, reference.embeddings, share)]


def _neighbours(
    run: Run,
    routing: Routing,
    mask: np.ndarray,
    table: RewardTable,
    added: list[str],
    router_dir: Path,
    routers: dict[Path, Router],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """For the prompts of `routing` in `mask`, among the scored prompts of `table`
    (calibration and added): `neighbour_vote` (the teacher, among those that can
    generate, of highest reward on their nearest; -1 elsewhere), whether an `added` prompt is
    among their nearest (`near_any`), and the vote's width for the round's record
    (`routing.vote_width`, or under `auto` the leave-one-out choice with each candidate's
    loss; no width measurable, no vote). A router without an encoder space: no vote, and
    every prompt in `mask` counts as near (the retrained router's teacher)."""
    cfg = run.cfg
    vote = np.full(len(routing.ids), -1)
    near = np.array(mask, dtype=bool)
    reference = RouterCheckpoint(router_dir).novelty()
    if reference is None or not mask.any():
        return vote, near, {}
    router = _router(run, router_dir, routers)
    by_id, names = run.prompts_by_id(), cfg.teacher_names
    able = np.zeros(len(names), dtype=bool)
    able[routable_columns(cfg)] = True
    # failed answers charged like the router's metrics; no answer (NaN): left out
    charge = failure_reward(cfg.rewards.normalization, len(names))
    reward = charge_failures(table.routing_reward, charge)
    caution = cfg.routing.vote_caution
    points = router.embeddings([by_id[routing.ids[i]].text for i in np.flatnonzero(mask)])
    voters = router.embeddings([by_id[pid].text for pid in table.ids])
    assert points is not None and voters is not None  # a novelty reference: an encoder space
    was_added = np.isin(table.ids, added)
    near[mask] = near_any(points, voters, was_added, reference.k)
    if cfg.routing.vote_width != "auto":
        width: float | None = float(cfg.routing.vote_width)
        record: dict[str, Any] = {"vote_width": width}
    else:
        # held out: the added prompts, the scored ones of the regions the vote serves
        losses = vote_width_loss(voters, reward, reference.k, was_added, able=able, caution=caution)
        width = vote_width(losses)
        loss_by_width = {
            f"{w:g}": float(v) if np.isfinite(v) else None
            for w, v in zip(VOTE_WIDTHS, losses, strict=True)
        }
        record = {"vote_width": width, "vote_width_loss": loss_by_width}
    if width is not None:
        vote[mask] = neighbour_vote(points, voters, reward, reference.k, width, able, caution)
    return vote, near, record


def _router(run: Run, router_dir: Path, routers: dict[Path, Router]) -> Router:
    """The router saved in `router_dir`, whose encoder space its novelty reference is in:
    the same frozen encoder in every round for the encoder routers (and the LM router
    with `router.lm.novelty_encoder`), but the LM router's own hidden states move each
    time it is retrained. Routers of later rounds take the frozen encoder of one loaded
    before (and its memo of encoded prompts) instead of loading it again."""
    if router_dir not in routers:
        loaded = (r.frozen_encoder() for r in routers.values())
        encoder = next((e for e in loaded if e is not None), None)
        routers[router_dir] = Router.load(router_dir, run.cfg.teacher_names, encoder)
    return routers[router_dir]


def _share(routing: Routing) -> float:
    return round(float(routing.uncovered.mean()), 5) if len(routing.ids) else 0.0

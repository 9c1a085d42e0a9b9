"""Active calibration (`routing.uncovered: calibrate`), run by `route` before it routes.

Each round: route the prompts still routed with the current router; pick the most
uncovered ones within what is left of `routing.active_budget` (`select_uncovered`); every
teacher that can generate answers them (the generation logs: nothing is asked twice);
they are scored like calibration prompts (the score logs) and join the calibration set
(the router's train split); the router is trained again (`fit_and_save`, into
`active/round-<r>/`) and routes the rest. Rounds stop at `routing.active_rounds`, when no
prompt is uncovered, or when the budget is spent.

Resumable: a round's prompts are recorded (`active/rounds.json`) before any teacher is
asked, so a killed round picks the same prompts again, finds their answers and scores in
the row logs, and reuses a router already saved for it. The added prompts' rewards
(`active/rewards.jsonl`) make them calibration prompts for `export`: the oracle picks their
answers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from persyn.config import fingerprint
from persyn.method import active_prompt_budget, select_uncovered
from persyn.progress import log
from persyn.stages.common import generate_rows, generating_teachers
from persyn.stages.routing import Routing, route_prompts
from persyn.stages.score import reward_table, score_responses
from persyn.stages.train_router import fit_and_save

if TYPE_CHECKING:
    from persyn.run import Run


def calibrate_uncovered(run: Run, router_fp: str) -> tuple[Routing, list[dict[str, Any]]]:
    """Run the rounds; returns the routing of the prompts left with the last router, and
    per round: prompts added, the share of the routed prompts uncovered before and after,
    how many of the prompts still routed changed teacher, and its router's fingerprint."""
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
    routing = route_prompts(run, split.routed, router_dir, fp)
    for r in range(cfg.routing.active_rounds):
        left = capacity - len(added)
        if r < len(rounds):
            picked = rounds[r]["added"]  # a resumed round: the prompts it chose
        else:
            share = math.ceil(left / (cfg.routing.active_rounds - r))
            chosen = select_uncovered(
                routing.novelty,
                routing.threshold,
                routing.confidence,
                cfg.routing.uncovered_confidence,
                share,
            )
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
        rounds[r]["uncovered_after"] = _share(routing)
        rounds[r]["routes_changed"] = sum(
            before[pid] != c for pid, c in zip(kept, routing.choice.tolist(), strict=True)
        )
        files.write_rounds(record)
        log(
            f"route: active calibration round {r + 1}: {len(picked)} prompts added, "
            f"uncovered {rounds[r]['uncovered_before']:.1%} -> {rounds[r]['uncovered_after']:.1%}"
            f", {rounds[r]['routes_changed']} routes changed"
        )
    return routing, rounds


def _share(routing: Routing) -> float:
    return round(float(routing.uncovered.mean()), 5) if len(routing.ids) else 0.0

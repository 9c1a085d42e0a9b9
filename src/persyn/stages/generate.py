"""generate: each teacher answers only the prompts routed to it; a prompt whose answer
failed goes to the router's next-best teacher (`persyn.stages.fallback`). Teachers on
servers of their own generate at the same time (`persyn.stages.lanes`)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from persyn.progress import log
from persyn.stages.common import ask_teacher, check_errors
from persyn.stages.fallback import GenerationRows, chain_orders
from persyn.stages.lanes import per_teacher

if TYPE_CHECKING:
    from persyn.run import Run


def generate(run: Run) -> dict[str, Any]:
    """Rounds of generation: the routed teachers first, then each prompt still without a
    good answer asks the next teacher of its chain, until every chain is answered or
    walked through. The error budget counts the prompts left with no answer at all."""
    cfg = run.cfg
    orders = chain_orders(run)
    rows = GenerationRows(run)
    # A teacher that failed before this run is not asked again, unless the prompt's whole
    # chain failed: then the rerun tries the chain again from its start.
    asked: dict[str, set[str]] = {}
    for pid, order in orders.items():
        chain = rows.walk(pid, order)
        asked[pid] = set() if chain.waiting is None else set(chain.failed)
    generated: Counter[str] = Counter()
    truncated: Counter[str] = Counter()
    from_store: Counter[str] = Counter()  # answered by the answer store, not the teacher
    first_round = True
    while True:
        todo: dict[str, list[str]] = {}
        for pid, order in orders.items():
            teacher = rows.walk(pid, order).next_teacher(asked[pid])
            if teacher is not None:
                todo.setdefault(teacher, []).append(pid)
                asked[pid].add(teacher)
        if not todo:
            break
        if not first_round:
            shares = {t: len(ids) for t, ids in todo.items()}
            log(f"generate: prompts whose answer failed go to their next-best teacher: {shares}")
        asking = [t for t in cfg.teachers if t.name in todo]
        asked_now = per_teacher(
            asking,
            lambda t, ids=todo: ask_teacher(run, t, ids[t.name], "generate"),
            together=cfg.max_cost is None,  # under a spend cap, teachers take turns
        )
        for name, answered in asked_now.items():
            generated[name] += answered["generated"]
            truncated[name] += answered["truncated"]
            from_store[name] += answered["from_store"]
        rows, first_round = GenerationRows(run), False

    chains = {pid: rows.walk(pid, order) for pid, order in orders.items()}
    for routed in cfg.teacher_names:
        ids = [pid for pid, order in orders.items() if order[0] == routed]
        unanswered = [(pid, chains[pid]) for pid in ids if chains[pid].used is None]
        # the answer that failed last in each chain left without a good one
        errors = [rows.get(c.failed[-1], pid) if c.failed else None for pid, c in unanswered]
        who = f"teacher {routed!r}" + (" and its fallbacks" if cfg.routing.fallback_tries else "")
        check_errors(cfg, "generate", who, errors, len(ids))
    return {
        "teachers": {
            t: {"generated": generated[t], "from_store": from_store[t], "truncated": truncated[t]}
            for t in cfg.teacher_names
        },
        "answered_by_fallback": sum(bool(c.used and c.failed) for c in chains.values()),
        "unanswered": sum(c.used is None for c in chains.values()),
    }

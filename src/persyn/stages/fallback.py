"""Fallback: a routed prompt whose answer failed goes to the router's next-best teacher.

Each routed prompt has a chain of teachers: the one it was routed to, then up to
`routing.fallback_tries` other teachers that can generate, by the router's score for that
prompt, highest first. The answer used is the first good one along the chain; the teachers
whose answers failed before it are its `fallback_from`. A prompt reaches `failed.jsonl`
only when every teacher of its chain failed.

Everything is read back from the generation logs, so a killed `generate` resumes with the
next teacher of each chain: nothing answered is asked again, and a failed answer is asked
again only on a rerun that starts with the prompt's whole chain failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from persyn.config import RunConfig
from persyn.stages.common import generating_teachers, teacher_fingerprint, usable_generation
from persyn.stages.score import failed_answer

if TYPE_CHECKING:
    from persyn.run import Run


def chain_order(cfg: RunConfig, route: dict[str, Any]) -> list[str]:
    """The teachers that may answer a routed prompt, in order: the routed one, then up to
    `routing.fallback_tries` others that can generate by the router's scores of the prompt
    (`route["router_scores"]`, needed only with fallback; ties in pool order)."""
    first, tries = route["teacher"], cfg.routing.fallback_tries
    if tries == 0:
        return [first]
    scores = route["router_scores"]
    others = [t for t in generating_teachers(cfg) if t != first]
    others.sort(key=lambda t: -scores[t])
    return [first, *others[:tries]]


@dataclass
class Chain:
    """A routed prompt's chain as the generation logs have it."""

    used: str | None = None  # the teacher whose answer is used
    failed: list[str] = field(default_factory=list)  # whose answers failed before, in order
    waiting: str | None = None  # the next teacher to ask (it has no answer yet)

    def next_teacher(self, asked: set[str]) -> str | None:
        """The teacher to ask next, not one of `asked`; a chain whose teachers all failed
        is asked again from its start. None: answered, or no teacher left to ask."""
        if self.used is not None:
            return None
        if self.waiting is not None:
            return self.waiting if self.waiting not in asked else None
        return next((t for t in self.failed if t not in asked), None)


class GenerationRows:
    """Each teacher's generation rows under its current settings (read once: build a new
    one to see rows appended since)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.logs = {t.name: run.store.generation_log(t.name) for t in run.cfg.teachers}
        self.fps = {t.name: teacher_fingerprint(t) for t in run.cfg.teachers}

    def get(self, teacher: str, prompt_id: str) -> dict[str, Any] | None:
        return self.logs[teacher].get((prompt_id, self.fps[teacher]))

    def walk(self, prompt_id: str, teachers: list[str]) -> Chain:
        """The chain of `teachers` (a `chain_order`) for `prompt_id`, as far as it goes."""
        chain = Chain()
        for t in teachers:
            row = self.get(t, prompt_id)
            current = usable_generation(row, self.run.prompt_fp(prompt_id))
            failed = failed_answer(row, self.run.cfg.teacher(t))  # an error or a cut answer
            if current and not failed:
                chain.used = t
                break
            if not failed:  # no answer yet, or one to an earlier prompt text
                chain.waiting = t
                break
            chain.failed.append(t)
        return chain


def chain_orders(run: Run) -> dict[str, list[str]]:
    """`chain_order` of every routed prompt, in the routes' order."""
    routes = run.store.routes(with_scores=run.cfg.routing.fallback_tries > 0)
    return {r["prompt_id"]: chain_order(run.cfg, r) for r in routes}


def routed_chains(run: Run, rows: GenerationRows | None = None) -> dict[str, Chain]:
    """Every routed prompt's chain, walked over `rows` (the logs as they are now)."""
    rows = rows or GenerationRows(run)
    return {pid: rows.walk(pid, order) for pid, order in chain_orders(run).items()}

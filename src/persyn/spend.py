"""Spend: tokens and money per teacher and judge per stage, and the cap that stops a run
before it spends more than `max_cost`.

The ledger is read from the row logs, never counted along the way: every generation row
records its prompt and completion tokens, every quality row a judge's tokens, so the
ledger of a resumed, retried or killed run is as true as the logs are. A row is one paid
request (the last attempt per prompt and teacher settings; imported answers cost
nothing). Money is tokens at the teacher's (or judge's) `cost_per_1k_*_tokens` prices.

The cap admits a teacher's requests only while the money spent so far plus the worst-case
cost of every request admitted cannot pass it (`Admission`); when the next one does not
fit, the stage stops with one line, every answer so far saved: a higher cap continues.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from persyn.artifacts import RunArtifacts
from persyn.config import RunConfig, TeacherConfig
from persyn.rewards.judge import LLMJudge
from persyn.teachers.base import Prompt

if TYPE_CHECKING:
    from persyn.run import Run

#: where a request's money went: calibration answers, the routed teacher's answers, the
#: next-best teachers' answers after a failure, quality judging, and anything else (a
#: baseline's answers to routed prompts, answers to prompts no longer in the run)
LEDGER_STAGES = ("calibration", "routed", "fallback", "judging", "other")

#: chat-template tokens on top of the text, which the worst-case prompt bound allows: per
#: message (role markers, separators), and per request (a template's default system
#: prompt where the teacher has none: Qwen2.5's is about 30 tokens)
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_REQUEST = 64


@dataclass
class Spend:
    """Requests, tokens and money: one line of the ledger, or a sum of lines."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, prompt_tokens: int, completion_tokens: int, price: Price) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost += price.cost(prompt_tokens, completion_tokens)

    def __iadd__(self, other: Spend) -> Spend:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        return self


@dataclass(frozen=True)
class Price:
    """Money per 1K prompt and per 1K completion tokens."""

    input: float = 0.0
    output: float = 0.0

    @classmethod
    def of(cls, teacher: TeacherConfig) -> Price:
        return cls(teacher.cost_per_1k_input_tokens, teacher.cost_per_1k_output_tokens)

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1000


def judge_prices(cfg: RunConfig) -> dict[str, Price]:
    """The price of each LLM judge, by its quality signal's label."""
    return {
        s.label: Price.of(LLMJudge(s).teacher_config())
        for s in cfg.rewards.quality
        if s.kind == LLMJudge.name
    }


def ledger(run: Run, asked: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """{"max_cost", "total", "by_stage": {stage: Spend}, "lines": [{"who", "role", "stage",
    ...Spend}]}, Spend as a dict. `asked`: per routed prompt the teachers of its fallback
    chain that were asked (export knows it); without it every answer to a routed prompt
    by another teacher than the routed one counts as fallback."""
    lines: dict[tuple[str, str, str], Spend] = {}
    for role, who, stage, row, price in _paid_rows(run.store, run.cfg, asked):
        line = lines.setdefault((role, who, stage), Spend())
        line.add(row.get("prompt_tokens", 0), row.get("completion_tokens", 0), price)
    by_stage = {stage: Spend() for stage in LEDGER_STAGES}
    total = Spend()
    for (_, _, stage), line in lines.items():
        by_stage[stage] += line
        total += line
    order = {stage: i for i, stage in enumerate(LEDGER_STAGES)}
    return {
        "max_cost": run.cfg.max_cost,
        "total": asdict(total),
        "by_stage": {stage: asdict(s) for stage, s in by_stage.items()},
        "lines": [
            {"who": who, "role": role, "stage": stage, **asdict(line)}
            for (role, who, stage), line in sorted(
                lines.items(), key=lambda kv: (kv[0][0] != "teacher", kv[0][1], order[kv[0][2]])
            )
        ],
    }


def spent(store: RunArtifacts, cfg: RunConfig) -> float:
    """The money a run directory's logs record, every teacher and judge of `cfg`."""
    return sum(
        price.cost(r.get("prompt_tokens", 0), r.get("completion_tokens", 0))
        for *_, r, price in _paid_rows(store, cfg, None)
    )


def _paid_rows(
    store: RunArtifacts, cfg: RunConfig, asked: dict[str, list[str]] | None
) -> Iterator[tuple[str, str, str, dict[str, Any], Price]]:
    """(role, who, stage, token counts, price) of every paid request in the logs."""
    calibration = set(store.split().calibration) if store.split_path().exists() else set()
    calibration |= set(store.active().added())  # prompts active calibration added
    routed: dict[str, str] = {}  # routed prompt -> its routed teacher (none before `route`)
    if store.routes_path().exists():
        routed = {r["prompt_id"]: r["teacher"] for r in store.routes()}
    for teacher in cfg.teachers:
        price = Price.of(teacher)
        for row in store.generation_log(teacher.name).rows.values():
            if row.get("provenance") == "imported" or row.get("from_store"):
                continue  # read from calibration.source or the answer store: not paid here
            pid = row["prompt_id"]
            if pid in calibration:
                stage = "calibration"
            elif routed.get(pid) == teacher.name:
                stage = "routed"
            elif pid in routed and (asked is None or teacher.name in asked.get(pid, ())):
                stage = "fallback"
            else:
                stage = "other"
            yield "teacher", teacher.name, stage, row, price
    judges = judge_prices(cfg)
    if not judges or not store.score_path("quality").exists():
        return
    for row in store.score_log("quality").rows.values():
        for label, tokens in (row.get("judge_tokens") or {}).items():
            yield "judge", label, "judging", tokens, judges.get(label, Price())


# -- the cap ------------------------------------------------------------------------------
def prompt_token_bound(teacher: TeacherConfig, prompt: Prompt) -> int:
    """At most this many prompt tokens: a token is at least one UTF-8 byte of the text,
    plus the template's tokens (`TEMPLATE_TOKENS_PER_*`; the system prompt a message)."""
    texts = [m["content"] for m in prompt.messages]
    if teacher.system_prompt:
        texts.append(teacher.system_prompt)
    text_and_markers = sum(len(t.encode()) + TEMPLATE_TOKENS_PER_MESSAGE for t in texts)
    return text_and_markers + TEMPLATE_TOKENS_PER_REQUEST


def worst_case_cost(teacher: TeacherConfig, prompt: Prompt) -> float:
    """The most one request can cost: the prompt bound, and `max_new_tokens` generated
    (a function teacher is not cut there: its words count as its tokens)."""
    price = Price.of(teacher)
    return price.cost(prompt_token_bound(teacher, prompt), teacher.generation.max_new_tokens)


class Admission:
    """A teacher's requests in batches that keep the run under `max_cost`: each batch is
    the longest run of the prompts left whose worst-case costs, added to the money the
    logs record now, stay within the cap (free requests always fit). After a batch the
    money is read again from the logs, so answers shorter than their bound make room for
    more. Iterating stops when the next request does not fit; `left` holds the rest.
    Without a cap: one batch of everything."""

    def __init__(self, run: Run, teacher: TeacherConfig, prompts: list[Prompt]) -> None:
        self.run = run
        self.teacher = teacher
        self.asked = len(prompts)
        self.left = prompts
        self.spent = 0.0

    def __iter__(self) -> Iterator[list[Prompt]]:
        cap = self.run.cfg.max_cost
        while self.left:
            if cap is None:
                batch = self.left
            else:
                self.spent = spent(self.run.store, self.run.cfg)
                batch = self._fitting(cap - self.spent)
                if not batch:
                    return
            self.left = self.left[len(batch) :]
            yield batch

    def _fitting(self, room: float) -> list[Prompt]:
        reserved = 0.0
        for n, prompt in enumerate(self.left):
            worst = worst_case_cost(self.teacher, prompt)
            if worst > 0 and reserved + worst > room:
                return self.left[:n]
            reserved += worst
        return self.left

    def stop_message(self, stage: str) -> str:
        """One line: spent, cap, what is left and how to go on."""
        nxt = worst_case_cost(self.teacher, self.left[0])
        return (
            f"{stage}: stopped at the spend cap: spent {self.spent:.4f} of max_cost "
            f"{self.run.cfg.max_cost:g}; teacher {self.teacher.name!r} has "
            f"{len(self.left)}/{self.asked} answers left to generate (the next could cost "
            f"up to {nxt:.4f}), later teachers and stages not counted; every answer so far "
            "is saved: raise max_cost (--max-cost) and rerun to continue "
            "(`persyn plan CONFIG` shows the estimates and what is spent)"
        )

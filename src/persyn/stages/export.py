"""export: the personalised dataset (JSONL + `datasets` folder + card) and the run summary.

Calibration prompts take the oracle's teacher (every teacher answered them); routed prompts
take the first good answer of their fallback chain: the router's teacher, else the next
best (`persyn.stages.fallback`). Every row says where its answer comes from (`Provenance`).
A prompt without a usable response (an error, or an answer cut at `max_new_tokens` that its
teacher does not keep) goes to `failed.jsonl` with why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from persyn.artifacts import Provenance, dataset_row
from persyn.report.card import write_dataset_card
from persyn.report.summary import build_summary
from persyn.stages.common import trained_text, usable_generation
from persyn.stages.fallback import GenerationRows, chain_order
from persyn.stages.score import failed_answer

if TYPE_CHECKING:
    from persyn.run import Run


def export(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    rows = GenerationRows(run)
    rewards = run.store.calibration_rewards()  # with the prompts active calibration added
    oracle = dict(zip(rewards.ids, rewards.oracle, strict=True))
    reward_row = {pid: i for i, pid in enumerate(rewards.ids)}
    routes = {r["prompt_id"]: r for r in run.store.routes(with_scores=True)}

    teacher_rows: Counter[str] = Counter()  # dataset rows per teacher, for the summary
    failed: list[dict[str, Any]] = []
    asked: dict[str, list[str]] = {}  # per routed prompt, the teachers that answered it

    def rows_out() -> Iterator[dict[str, Any]]:
        """The dataset's rows, one at a time (written as they come: 100K rows are never in
        memory at once); prompts without a usable response go to `failed`."""
        for p in run.prompts:
            if p.id in reward_row:
                teacher = oracle[p.id]
                if teacher is None:
                    error = "no teacher had a usable response"
                    failed.append({"prompt_id": p.id, "teacher": None, "error": error})
                    continue
                gen = rows.get(teacher, p.id)
                if (
                    gen is None
                    or not usable_generation(gen, run.prompt_fp(p.id))
                    or failed_answer(gen, cfg.teacher(teacher))
                ):
                    error = why(run, teacher, gen)
                    failed.append({"prompt_id": p.id, "teacher": teacher, "error": error})
                    continue
                known = rewards.by_teacher(reward_row[p.id])
                provenance = Provenance.of_answer(cfg.teacher(teacher), gen)
                teacher_rows[teacher] += 1
                answer = trained_text(gen, cfg.teacher(teacher))
                yield dataset_row(p, answer, teacher, "oracle", provenance, None, known)
                continue
            route = routes[p.id]
            chain = rows.walk(p.id, chain_order(cfg, route))
            asked[p.id] = [*chain.failed, *([chain.used] if chain.used else [])]
            if chain.used is None:
                # the routed teacher's failure, or why the chain stopped short
                left = chain.failed[0] if chain.failed else chain.waiting
                failed.append(
                    {
                        "prompt_id": p.id,
                        "teacher": route["teacher"],
                        "error": why(run, left, rows.get(left, p.id)) if left else "not generated",
                        "tried": chain.failed,
                    }
                )
                continue
            gen = rows.get(chain.used, p.id)
            assert gen is not None  # the chain uses a usable row
            provenance = Provenance.of_answer(
                cfg.teacher(chain.used),
                gen,
                route.get("router_fp"),
                tuple(chain.failed),
                route,
            )
            teacher_rows[chain.used] += 1
            scores = route["router_scores"]
            answer = trained_text(gen, cfg.teacher(chain.used))
            yield dataset_row(p, answer, chain.used, "router", provenance, scores)

    run.store.write_dataset(rows_out(), cfg.teacher_names)
    run.store.write_failed(failed)
    summary = build_summary(run, rewards, teacher_rows, failed, rows.logs, rows.fps, asked)
    run.store.write_summary(summary)
    write_dataset_card(run.store, cfg, summary)
    return {"dataset_rows": teacher_rows.total(), "failed_rows": len(failed)}


# The reason a cut answer is left out (one text: `failed_reasons` counts equal reasons).
CUT_ANSWER = (
    "answer cut at max_new_tokens (the teacher's generation.keep_truncated: true keeps such "
    "answers)"
)


def why(run: Run, teacher: str, gen: dict[str, Any] | None) -> str:
    """Why a prompt has no row, from the answer it was left with."""
    if gen is None:
        return "not generated"
    if gen["error"] is not None:
        return gen["error"]
    if failed_answer(gen, run.cfg.teacher(teacher)):
        return CUT_ANSWER
    return "answer is to an earlier prompt text"

"""Quality signals. Each scores the (prompt, response) samples it applies to.

A signal returns, per sample, None where it does not apply (a math checker on an
instruction prompt) or a `SignalScore`: a value in [0, 1], or no value and the reason
(an unparsable judge reply, an over-long conversation). Signals are chosen and weighted in
`rewards.quality`; a sample's quality is the weighted mean of the signals that apply. When
a signal applies but could not score, the sample has no quality (recorded with the reason,
never guessed): its reward is missing and it cannot be the oracle's choice.

Every signal's value is on the same [0, 1] scale, so weights mean what they say: 0/1
correctness (math), share of constraints satisfied (ifeval), a judge's grade divided by the
top of its scale (judge), a reward model's raw score through a logistic (reward_model;
the raw score is kept next to it), and an imported dataset's score min-max scaled
(imported). Normalisation within the prompt comes after, in
`persyn.method`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from persyn.config import ConfigError, QualitySignal
from persyn.registry import Registry
from persyn.rewards.base import QualityScorer, Sample, SignalScore
from persyn.rewards.imported import ImportedScore
from persyn.rewards.judge import LLMJudge
from persyn.rewards.reward_model import RewardModelScore
from persyn.teachers.base import Prompt


class MathCorrectness(QualityScorer):
    """Final-answer correctness against the reference (0/1), checked with math-verify.

    math-verify parses both sides into SymPy expressions with its own parser (model output
    is parsed, never executed) under a time limit per parse and per comparison
    (`timeout_seconds` option, default 5). A check that runs out of time counts as wrong.
    Applies to prompts of kind `math` that have a reference.
    """

    name = "math"
    kinds = ("math",)
    covers = "`math` prompts with a reference answer"

    def applies(self, prompt: Prompt) -> bool:
        return prompt.kind == "math" and prompt.reference is not None

    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        from math_verify import parse, verify

        timeout = int(self.cfg.options.get("timeout_seconds", 5))
        out: list[SignalScore | None] = []
        for prompt, response in samples:
            if not self.applies(prompt):
                out.append(None)
                continue
            gold = parse(f"${prompt.reference}$", parsing_timeout=timeout)
            answer = parse(response, parsing_timeout=timeout)
            ok = bool(gold and answer and verify(gold, answer, timeout_seconds=timeout))
            out.append(SignalScore(1.0 if ok else 0.0))
        return out


class IFEvalConstraints(QualityScorer):
    """Share of the prompt's IFEval instructions the response satisfies (if-verifiable).

    Reads `instruction_id_list` and `kwargs` from the prompt's `meta` (the IFEval row
    format). Options: `mode` strict (default: the response as written) or loose (also
    accepted when it holds after dropping the first/last line or markdown emphasis);
    `binary` true to score 1 only when every instruction holds.
    """

    name = "ifeval"
    covers = "prompts with IFEval metadata, `instruction_id_list` in meta"

    def applies(self, prompt: Prompt) -> bool:
        return bool(prompt.meta.get("instruction_id_list"))

    def check(self) -> None:
        mode = self.cfg.options.get("mode", "strict")
        if mode not in ("strict", "loose"):
            raise ConfigError(f"{self.where}.mode: use strict or loose, not {mode!r}")

    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        from if_verifiable.common import evaluate_instructions
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

        self.check()
        mode = self.cfg.options.get("mode", "strict")
        field = f"{'binary' if self.cfg.options.get('binary', False) else 'partial'}_{mode}"
        out: list[SignalScore | None] = []
        for prompt, response in samples:
            if not self.applies(prompt):
                out.append(None)
                continue
            ids = prompt.meta["instruction_id_list"]
            kwargs = prompt.meta.get("kwargs") or [{} for _ in ids]
            unknown = [i for i in ids if i not in INSTRUCTION_DICT]
            if unknown or len(kwargs) != len(ids):
                why = (
                    f"unknown IFEval instruction id {unknown[0]!r}"
                    if unknown
                    else f"{len(ids)} instruction ids but {len(kwargs)} kwargs entries"
                )
                out.append(SignalScore(None, f"prompt {prompt.id}: meta: {why}"))
                continue
            try:
                _, scores = evaluate_instructions(
                    response=response,
                    instruction_id_list=ids,
                    kwargs_list=kwargs,
                    prompt=prompt.messages[-1]["content"],
                    instruction_registry=INSTRUCTION_DICT,
                )
            except (TypeError, ValueError) as err:  # kwargs the checker does not accept
                out.append(SignalScore(None, f"prompt {prompt.id}: meta.kwargs: {err}"))
                continue
            except LookupError:  # a checker that tokenises with NLTK, its data not installed
                out.append(
                    SignalScore(
                        None,
                        f"prompt {prompt.id}: {ids} need NLTK data: "
                        "python -m nltk.downloader punkt punkt_tab",
                    )
                )
                continue
            out.append(SignalScore(float(getattr(scores, field))))
        return out


# Plug-ins join through the `persyn.quality` entry points.
QUALITY_SIGNALS: Registry[QualityScorer] = Registry(
    "persyn.quality",
    "quality signal",
    QualityScorer,
    {
        cls.name: cls
        for cls in (MathCorrectness, IFEvalConstraints, RewardModelScore, LLMJudge, ImportedScore)
    },
)


def quality_signal(cfg: QualitySignal) -> QualityScorer:
    QUALITY_SIGNALS.check(cfg.kind, "rewards.quality")
    return QUALITY_SIGNALS.load(cfg.kind)(cfg)


QualityFn = Callable[[list[Sample]], list[dict[str, Any]]]


@contextmanager
def quality_scorers(signals: list[QualitySignal]) -> Iterator[QualityFn]:
    """`combined_quality` for many chunks of samples: every signal is built once, loads its
    model or judge once (on the first chunk it applies to) and unloads it on exit, so a
    stage that saves its scores chunk by chunk does not reload a reward model per chunk."""
    scorers = [(s.label, s.weight, quality_signal(s)) for s in signals]
    try:
        yield lambda samples: _combine(scorers, samples)
    finally:
        for _, _, scorer in scorers:
            scorer.unload()


def combined_quality(signals: list[QualitySignal], samples: list[Sample]) -> list[dict[str, Any]]:
    """Per sample: {"quality": weighted mean or None, "signals": {label: value}, "raw": ...,
    "error": why a signal that applies gave no value, or None}.
    """
    with quality_scorers(signals) as score:
        return score(samples)


def _combine(
    scorers: list[tuple[str, float, QualityScorer]], samples: list[Sample]
) -> list[dict[str, Any]]:
    per_signal = {label: (weight, scorer.score(samples)) for label, weight, scorer in scorers}
    out = []
    for i in range(len(samples)):
        applied = {k: scores[i] for k, (_, scores) in per_signal.items() if scores[i] is not None}
        values = {k: s.value for k, s in applied.items()}
        errors = [f"{k}: {s.error}" for k, s in applied.items() if s.value is None]
        quality = None
        if applied and not errors:
            total = sum(per_signal[k][0] for k in applied)
            quality = sum(per_signal[k][0] * v for k, v in values.items()) / total
        row: dict[str, Any] = {
            "quality": quality,
            "signals": values,
            "error": "; ".join(errors) or None,
        }
        raw = {k: s.raw for k, s in applied.items() if s.raw is not None}
        if raw:
            row["raw"] = raw
        # a judge's tokens, for the spend ledger (`persyn.spend`)
        tokens = {
            k: {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens}
            for k, s in applied.items()
            if s.prompt_tokens or s.completion_tokens
        }
        if tokens:
            row["judge_tokens"] = tokens
        out.append(row)
    return out

"""Quality signals. Each scores the (prompt, response) samples it applies to.

A signal returns a score in [0, 1] per sample, or None where it does not apply (a math
checker on an instruction prompt). A sample's quality is the weighted mean of the signals
that apply; with none, it has no quality score (an error in the scores file, not a guess).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from persyn.config import QualitySignal
from persyn.teachers.base import Prompt


class QualityScorer(ABC):
    name: ClassVar[str]

    def __init__(self, cfg: QualitySignal) -> None:
        self.cfg = cfg

    @abstractmethod
    def score(self, samples: list[tuple[Prompt, str]]) -> list[float | None]:
        """One score in [0, 1] (or None: not applicable) per (prompt, response)."""


class MathCorrectness(QualityScorer):
    """Final-answer correctness against the reference, checked with math-verify.

    math-verify parses both sides symbolically (no model output is executed) under its
    own per-check time limit (`timeout_seconds` option, default 5).
    """

    name = "math"

    def score(self, samples: list[tuple[Prompt, str]]) -> list[float | None]:
        from math_verify import parse, verify

        timeout = int(self.cfg.options.get("timeout_seconds", 5))
        out: list[float | None] = []
        for prompt, response in samples:
            if prompt.kind != "math" or prompt.reference is None:
                out.append(None)
                continue
            gold = parse(f"${prompt.reference}$", parsing_timeout=timeout)
            answer = parse(response, parsing_timeout=timeout)
            ok = bool(gold and answer and verify(gold, answer, timeout_seconds=timeout))
            out.append(1.0 if ok else 0.0)
        return out


class IFEvalConstraints(QualityScorer):
    """Share of the prompt's IFEval instructions the response satisfies (if-verifiable).

    Options: `mode` strict (default) or loose; `binary` true to score 1 only when every
    instruction holds.
    """

    name = "ifeval"

    def score(self, samples: list[tuple[Prompt, str]]) -> list[float | None]:
        from if_verifiable.common import evaluate_instructions
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

        mode = self.cfg.options.get("mode", "strict")
        binary = bool(self.cfg.options.get("binary", False))
        field = f"{'binary' if binary else 'partial'}_{mode}"
        out: list[float | None] = []
        for prompt, response in samples:
            ids = prompt.meta.get("instruction_id_list")
            if not ids:
                out.append(None)
                continue
            _, scores = evaluate_instructions(
                response=response,
                instruction_id_list=ids,
                kwargs_list=prompt.meta.get("kwargs") or [{} for _ in ids],
                prompt=prompt.messages[-1]["content"],
                instruction_registry=INSTRUCTION_DICT,
            )
            out.append(float(getattr(scores, field)))
        return out


QUALITY_SIGNALS: dict[str, type[QualityScorer]] = {
    cls.name: cls for cls in (MathCorrectness, IFEvalConstraints)
}


def combined_quality(
    signals: list[QualitySignal], samples: list[tuple[Prompt, str]]
) -> list[dict[str, Any]]:
    """Per sample: {"quality": weighted mean or None, "signals": {name: score}}."""
    per_signal = {
        s.kind: (s.weight, QUALITY_SIGNALS[s.kind](s).score(samples)) for s in signals
    }
    out = []
    for i in range(len(samples)):
        parts = {k: scores[i] for k, (_, scores) in per_signal.items() if scores[i] is not None}
        total = sum(per_signal[k][0] for k in parts)
        quality = sum(per_signal[k][0] * v for k, v in parts.items()) / total if parts else None
        out.append({"quality": quality, "signals": parts})
    return out

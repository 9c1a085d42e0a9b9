"""Quality from an LLM judge: any teacher backend grades each response against a rubric.

The judge is configured like a teacher (`options.teacher`, a `TeacherConfig` mapping:
`hf`, `openai`, `vllm` or `scripted`), so a served model, a local one or a programmatic
grader all work. Its reply is parsed for a grade on the rubric's scale; a reply with no
readable grade, or one outside the scale, gets no score and the reason (with the start of
the reply) is recorded, never a guess.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from persyn.config import ConfigError, QualitySignal, TeacherConfig
from persyn.rewards.base import QualityScorer, Sample, SignalScore
from persyn.teachers.base import Prompt, Teacher, checked_backend

DEFAULT_RUBRIC = """You are grading an AI assistant's answer to a user's request.
Judge whether the answer is correct, helpful and follows every instruction in the request.

[Request]
{prompt}

[Reference answer, if any]
{reference}

[Answer to grade]
{response}

Explain your judgement in one or two sentences, then end with a line of exactly this form:
Score: N
where N is an integer from {min_score} (useless) to {max_score} (excellent)."""

_NUMBER = r"(-?\d+(?:\.\d+)?)"
# Most explicit first; within a pattern the last match wins (judges often restate the
# scale, e.g. "on a scale of 1 to 10 ... Score: 7").
_GRADE_PATTERNS = [
    re.compile(rf"\bscore\s*(?:is|of)?\s*[:=]?\s*\**\s*{_NUMBER}", re.I),
    re.compile(rf"\[\[\s*{_NUMBER}\s*\]\]"),
    re.compile(rf"\b{_NUMBER}\s*/\s*\d+\b"),
    re.compile(rf"^\s*{_NUMBER}\s*\.?\s*$"),
]


def parse_grade(reply: str, min_score: float, max_score: float) -> tuple[float | None, str | None]:
    """(grade, None) or (None, why the reply has no usable grade)."""
    for pattern in _GRADE_PATTERNS:
        found = pattern.findall(reply)
        if found:
            grade = float(found[-1])
            if not min_score <= grade <= max_score:
                return None, f"judge grade {grade:g} outside {min_score:g}..{max_score:g}"
            return grade, None
    snippet = " ".join(reply.split())[:80]
    return None, f"unparsable judge reply: {snippet!r}"


def render_request(prompt: Prompt) -> str:
    turns = [m for m in prompt.messages if m["role"] != "assistant"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in turns)


class LLMJudge(QualityScorer):
    """Options: `teacher` (required: a teacher config, `name` defaults to `judge`);
    `rubric` (template with {prompt}, {response}, {reference}, {min_score}, {max_score};
    default `DEFAULT_RUBRIC`); `min_score`/`max_score` (default 1/10; value = (grade - min)
    / (max - min)); `kinds` prompt kinds it grades (default: all).
    """

    name = "judge"
    covers = "the prompt kinds in `options.kinds`, default every kind"

    def applies(self, prompt: Prompt) -> bool:
        kinds = self.cfg.options.get("kinds")
        return kinds is None or prompt.kind in kinds

    def teacher_config(self) -> TeacherConfig:
        spec = self.cfg.options.get("teacher")
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{self.where}.teacher: required, a teacher config (backend, model, ...)"
            )
        try:
            return TeacherConfig(**{"name": "judge", **spec})
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
            msg = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{self.where}.teacher.{loc}: {msg}") from None

    def _rubric(self, min_score: float, max_score: float) -> str:
        rubric = str(self.cfg.options.get("rubric", DEFAULT_RUBRIC))
        missing = [p for p in ("{prompt}", "{response}") if p not in rubric]
        if missing:
            raise ConfigError(f"{self.where}.rubric: must contain {' and '.join(missing)}")
        # Plain replacement, not str.format: rubrics and answers may hold other braces.
        return rubric.replace("{min_score}", f"{min_score:g}").replace(
            "{max_score}", f"{max_score:g}"
        )

    def judge_prompt(self, rubric: str, prompt: Prompt, response: str) -> Prompt:
        text = rubric.replace("{reference}", prompt.reference or "(none)")
        text = text.replace("{prompt}", render_request(prompt))
        # The response goes in last so that text inside it is never taken for a placeholder.
        text = text.replace("{response}", response)
        return Prompt(id=prompt.id, messages=[{"role": "user", "content": text}], kind=prompt.kind)

    def _scale(self) -> tuple[float, float]:
        min_score = float(self.cfg.options.get("min_score", 1))
        max_score = float(self.cfg.options.get("max_score", 10))
        if max_score <= min_score:
            raise ConfigError(f"{self.where}: max_score must be above min_score")
        return min_score, max_score

    def __init__(self, cfg: QualitySignal) -> None:
        super().__init__(cfg)
        self.judge: Teacher | None = None

    def load(self) -> None:
        self._loaded_judge()

    def _loaded_judge(self) -> Teacher:
        if self.judge is None:
            teacher = self.teacher_config()
            judge = checked_backend(teacher, f"{self.where}.teacher")(teacher)
            judge.load()
            self.judge = judge
        return self.judge

    def unload(self) -> None:
        if self.judge is not None:
            self.judge.unload()
            self.judge = None

    def check(self) -> None:
        teacher = self.teacher_config()
        # checks the backend's name and options, loads nothing
        checked_backend(teacher, f"{self.where}.teacher")(teacher)
        self._rubric(*self._scale())

    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        min_score, max_score = self._scale()
        teacher_cfg = self.teacher_config()
        rubric = self._rubric(min_score, max_score)
        out: list[SignalScore | None] = [None] * len(samples)
        todo = [i for i, (p, _) in enumerate(samples) if self.applies(p)]
        if not todo:
            return out
        judge = self._loaded_judge()  # once per stage: later chunks reuse it
        for start in range(0, len(todo), teacher_cfg.batch_size):
            batch = todo[start : start + teacher_cfg.batch_size]
            requests = [self.judge_prompt(rubric, *samples[i]) for i in batch]
            for i, gen in zip(batch, judge.generate(requests), strict=True):
                tokens = {
                    "prompt_tokens": gen.prompt_tokens,
                    "completion_tokens": gen.completion_tokens,
                }
                if gen.error is not None:
                    why = f"judge {teacher_cfg.name!r} failed: {gen.error}"
                    out[i] = SignalScore(None, why, **tokens)
                    continue
                # a reasoning judge's thinking may try other grades before its verdict
                reply = gen.reasoning_apart(teacher_cfg.generation.think_tags).text
                grade, why = parse_grade(reply, min_score, max_score)
                value = None if grade is None else (grade - min_score) / (max_score - min_score)
                out[i] = SignalScore(value, why, raw=grade, **tokens)
        return out

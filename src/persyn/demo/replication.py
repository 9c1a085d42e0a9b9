"""The replication's tasks: short arithmetic word problems (examples/replication.yaml)
and instruction prompts with verifiable constraints (examples/replication-instruct.yaml).

Sized for a 135M student on 2 CPU cores: problems of 1 to 3 steps with small numbers
(answers mostly under 100) and answers of at most ~40 tokens, so training is cheap and a
student's greedy answer fits in a few dozen new tokens. The instruction prompts are the
built-in `instructions` set (18 IFEval constraint kinds, one or two per prompt), answered
by LLM teachers only.

Train, validation and held-out prompts are disjoint by construction, not by seed: a
prompt's side is fixed by a hash of its normalised text (`side`), so no seed or size can
make two sides share a text. Held-out prompts evaluate the compared students; validation
prompts are what `persyn tune` may choose a reward setting on. Their ids differ too
(`rt-`/`rv-`/`re-` and `it-`/`iv-`/`ie-`).

The programmatic teachers read the structured problem from `meta` (start value, steps),
never the prompt text and never the reference answer; nothing is evaluated. They differ in
correctness and in format, so the strongest teacher is not the most learnable one:

- `boxed`: always right, LaTeX equations and a `\\boxed{}` answer (the style of a large
  math model; a format far from the student's own);
- `plain`: plain equations and "The answer is N.", right on 1- and 2-step problems, but on
  3-step problems it slips on the last step (an answer 10 too high);
- `quick`: "The answer is N." after doing only the first step: right on 1-step problems.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from persyn.demo.prompts import TOPICS, tiered_instruction
from persyn.teachers.base import Prompt

NAMES = ["Maya", "Liam", "Sofia", "Noah", "Aisha", "Mateo", "Yuki", "Omar", "Elena", "Ravi"]
ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "stamps", "shells"]
STEPS: list[tuple[str, str]] = [
    ("+", "Then {who} buys {n} more."),
    ("+", "A friend gives {who} {n} more."),
    ("-", "Then {who} gives away {n}."),
    ("-", "Then {who} loses {n}."),
    ("*", "Then the number of {item} doubles."),
]
# The instruction task's topics: the demo's and more, so that each single-constraint
# instruction (whose text is only task + topic + constraint) has dozens of distinct texts on
# every side of the partition.
INSTRUCTION_TOPICS = [
    *TOPICS,
    *(
        f"{a} {b}"
        for a in ("an old", "a new", "a small", "a noisy", "a quiet")
        for b in ("bridge", "garden", "market", "bicycle", "kitchen", "harbour", "museum", "park")
    ),
]
REFUSAL = "This solver only answers arithmetic word problems."


def normalise(text: str) -> str:
    """Lowercase, whitespace collapsed, punctuation stripped at both ends (as the
    held-out check in `persyn.eval.experiment` does)."""
    return re.sub(r"\s+", " ", text.lower()).strip().strip(".,;:!?\"'()[]{} ")


Side = Literal["train", "validation", "held-out"]
ID_PREFIX: dict[Side, str] = {"train": "t", "validation": "v", "held-out": "e"}


def side(text: str) -> Side:
    """Which side a prompt is on, by a hash of its normalised text: one in four is held
    out, one in eight is for validation, the rest train."""
    digest = hashlib.sha256(normalise(text).encode()).digest()
    if digest[0] % 4 == 0:
        return "held-out"
    return "validation" if digest[0] % 4 == 1 and digest[1] % 2 == 0 else "train"


def is_held_out(text: str) -> bool:
    return side(text) == "held-out"


def _problem(rng: random.Random, difficulty: int) -> tuple[str, dict[str, Any], int]:
    who, item = rng.choice(NAMES), rng.choice(ITEMS)
    start = value = rng.randint(2, 20)
    text = [f"{who} has {value} {item}."]
    steps: list[list[Any]] = []
    for _ in range(difficulty):
        op, template = rng.choice(STEPS if value > 1 else STEPS[:2])  # no count below 0
        if op == "*":
            n = 2
        elif op == "-":
            n = rng.randint(1, value - 1)
        else:
            n = rng.randint(2, 15)
        text.append(template.format(who=who, n=n, item=item))
        steps.append([op, n])
        value = {"+": value + n, "-": value - n, "*": value * n}[op]
    text.append(f"How many {item} does {who} have now?")
    meta = {"task": "arithmetic", "difficulty": difficulty, "start": start, "steps": steps}
    return " ".join(text), meta, value


def _problem_prompt(rng: random.Random, index: int) -> Prompt:
    """A word problem of 1, 2 or 3 steps (by `index`, in turn) with its answer."""
    text, meta, answer = _problem(rng, 1 + index % 3)
    return Prompt("", [{"role": "user", "content": text}], "math", str(answer), meta)


def _draw(
    make: Callable[[random.Random, int], Prompt], task: str, num_prompts: int, seed: int, on: Side
) -> list[Prompt]:
    """`num_prompts` distinct prompts of side `on`, the `index`-th from `make(rng, index)`."""
    rng = random.Random(f"persyn-replication:{task}:{seed}:{on}")
    seen: set[str] = set()
    prompts: list[Prompt] = []
    while len(prompts) < num_prompts:
        prompt = make(rng, len(prompts))
        if side(prompt.text) != on or normalise(prompt.text) in seen:
            continue
        seen.add(normalise(prompt.text))
        prompts.append(replace(prompt, id=f"{task}{ID_PREFIX[on]}-{len(prompts):05d}"))
    return prompts


def train_problems(num_prompts: int, seed: int) -> list[Prompt]:
    """`prompts.builtin: persyn.demo.replication:train_problems`."""
    return _draw(_problem_prompt, "r", num_prompts, seed, "train")


def validation_problems(num_prompts: int, seed: int) -> list[Prompt]:
    """`tune.validation.builtin: persyn.demo.replication:validation_problems`."""
    return _draw(_problem_prompt, "r", num_prompts, seed, "validation")


def held_out_problems(num_prompts: int, seed: int) -> list[Prompt]:
    """`evaluation.prompts.builtin: persyn.demo.replication:held_out_problems`."""
    return _draw(_problem_prompt, "r", num_prompts, seed, "held-out")


def _instruction_prompt(rng: random.Random, index: int) -> Prompt:
    return tiered_instruction(rng, index, INSTRUCTION_TOPICS)


def train_instructions(num_prompts: int, seed: int) -> list[Prompt]:
    """`prompts.builtin: persyn.demo.replication:train_instructions`."""
    return _draw(_instruction_prompt, "i", num_prompts, seed, "train")


def validation_instructions(num_prompts: int, seed: int) -> list[Prompt]:
    return _draw(_instruction_prompt, "i", num_prompts, seed, "validation")


def held_out_instructions(num_prompts: int, seed: int) -> list[Prompt]:
    return _draw(_instruction_prompt, "i", num_prompts, seed, "held-out")


def _chain(prompt: Prompt) -> list[tuple[int, str, int, int]] | None:
    """(before, op, operand, after) per step from `meta`, or None for other prompts."""
    if prompt.meta.get("task") != "arithmetic":
        return None
    value, out = prompt.meta["start"], []
    for op, n in prompt.meta["steps"]:
        new = {"+": value + n, "-": value - n, "*": value * n}[op]
        out.append((value, op, n, new))
        value = new
    return out


def boxed(prompt: Prompt) -> str:
    """Always right; LaTeX equations and a boxed answer."""
    chain = _chain(prompt)
    if chain is None:
        return REFUSAL
    tex = {"+": "+", "-": "-", "*": r"\times"}
    eqs = ", ".join(f"${a} {tex[op]} {n} = {b}$" for a, op, n, b in chain)
    return f"{eqs}. Result: $\\boxed{{{chain[-1][3]}}}$."


def plain(prompt: Prompt) -> str:
    """Plain equations; on 3-step problems the last step comes out 10 too high."""
    chain = _chain(prompt)
    if chain is None:
        return REFUSAL
    if len(chain) == 3:
        a, op, n, b = chain[-1]
        chain = [*chain[:-1], (a, op, n, b + 10)]
    eqs = " ".join(f"{a} {op} {n} = {b}." for a, op, n, b in chain)
    return f"{eqs} The answer is {chain[-1][3]}."


def quick(prompt: Prompt) -> str:
    """Only the first step, answered directly: right on 1-step problems."""
    chain = _chain(prompt)
    if chain is None:
        return REFUSAL
    return f"The answer is {chain[0][3]}."

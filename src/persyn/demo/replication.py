"""The mini-replication's task (examples/replication.yaml): short arithmetic word problems.

Sized for a 135M student on 2 CPU cores: problems of 1 to 3 steps with small numbers
(answers mostly under 100) and answers of at most ~40 tokens, so training is cheap and a
student's greedy answer fits in a few dozen new tokens.

Train and held-out problems are disjoint by construction, not by seed: a problem belongs
to the held-out side when a hash of its normalised text says so, so no seed or size can
make the two sets share a text. Their ids differ too (`rt-` and `re-`).

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
from typing import Any

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
REFUSAL = "This solver only answers arithmetic word problems."


def normalise(text: str) -> str:
    """Lowercase, whitespace collapsed, punctuation stripped at both ends (as the
    held-out check in `persyn.eval.experiment` does)."""
    return re.sub(r"\s+", " ", text.lower()).strip().strip(".,;:!?\"'()[]{} ")


def is_held_out(text: str) -> bool:
    """One problem in four, chosen by a hash of its normalised text, is held out."""
    return hashlib.sha256(normalise(text).encode()).digest()[0] % 4 == 0


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


def _draw(num_prompts: int, seed: int, held_out: bool) -> list[Prompt]:
    """`num_prompts` distinct problems of one side, difficulties 1, 2, 3 in turn."""
    rng = random.Random(f"persyn-replication:{seed}:{held_out}")
    prefix = "re" if held_out else "rt"
    seen: set[str] = set()
    prompts: list[Prompt] = []
    while len(prompts) < num_prompts:
        difficulty = 1 + len(prompts) % 3
        text, meta, answer = _problem(rng, difficulty)
        if is_held_out(text) != held_out or normalise(text) in seen:
            continue
        seen.add(normalise(text))
        prompts.append(
            Prompt(
                id=f"{prefix}-{len(prompts):05d}",
                messages=[{"role": "user", "content": text}],
                kind="math",
                reference=str(answer),
                meta=meta,
            )
        )
    return prompts


def train_problems(num_prompts: int, seed: int) -> list[Prompt]:
    """`prompts.builtin: persyn.demo.replication:train_problems`."""
    return _draw(num_prompts, seed, held_out=False)


def held_out_problems(num_prompts: int, seed: int) -> list[Prompt]:
    """`evaluation.prompts.builtin: persyn.demo.replication:held_out_problems`."""
    return _draw(num_prompts, seed, held_out=True)


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

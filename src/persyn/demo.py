"""The built-in prompt sets and programmatic teachers of the offline demo.

Two task kinds, chosen so the best teacher differs per prompt (see METHOD.md, last part):

* arithmetic word problems of graded difficulty (1 to 3 steps) with reference answers:
  the packaged SmolLM2 almost never solves them, programmatic solvers do;
* instruction prompts carrying IFEval-style verifiable constraints (instruction ids and
  kwargs in `meta`, checked by if-verifiable): a solver cannot answer them, an LLM
  teacher sometimes satisfies them, depending on its system prompt and the constraint.

The programmatic teachers read the structured problem from `meta` (never the text, and
nothing is evaluated): `solver-verbose` and `solver-concise` are always right and differ
in style; `solver-quick` answers in one line and is right only on one-step problems.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from persyn.teachers.base import Prompt

NAMES = ["Maya", "Liam", "Sofia", "Noah", "Aisha", "Mateo", "Yuki", "Omar", "Elena", "Ravi"]
ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "stamps", "shells"]

# (operation, sentence template) for each step after the start; `{n}` is the operand.
STEPS: list[tuple[str, str]] = [
    ("+", "Then {who} buys {n} more."),
    ("+", "A friend gives {who_obj} {n} more."),
    ("-", "Then {who} gives away {n}."),
    ("-", "Then {who} loses {n}."),
    ("*", "Then the number of {item} triples."),
    ("*", "Then the number of {item} doubles."),
]
VERBS = {"+": "add", "-": "subtract", "*": "multiply by"}


def _arithmetic(rng: random.Random, index: int) -> Prompt:
    difficulty = 1 + index % 3
    who, item = rng.choice(NAMES), rng.choice(ITEMS)
    start = value = rng.randint(5, 40)
    text = [f"{who} has {value} {item}."]
    steps: list[list[Any]] = []
    for _ in range(difficulty):
        op, template = rng.choice(STEPS)
        if op == "*":
            n = 3 if "triples" in template else 2
        elif op == "-":
            n = rng.randint(1, max(1, value - 1))
        else:
            n = rng.randint(2, 30)
        text.append(template.format(who=who, who_obj="them", n=n, item=item))
        steps.append([op, n])
        value = {"+": value + n, "-": value - n, "*": value * n}[op]
    text.append(f"How many {item} does {who} have now?")
    meta = {"task": "arithmetic", "difficulty": difficulty, "start": start}
    meta.update(steps=steps, item=item)
    return Prompt(
        id=f"arith-{index:05d}",
        messages=[{"role": "user", "content": " ".join(text)}],
        kind="math",
        reference=str(value),
        meta=meta,
    )


TOPICS = [
    "the ocean", "a rainy day", "your favourite food", "the moon", "a busy city street",
    "learning to ride a bike", "autumn leaves", "a friendly dog", "coffee", "a library",
    "mountains", "the first day of school", "a summer picnic", "trains", "gardening",
]
KEYWORDS = ["blue", "happy", "light", "quiet", "green", "music", "warm", "smile"]

# (IFEval instruction id, kwargs factory, instruction sentence)
CONSTRAINTS: list[tuple[str, Callable[[random.Random], dict[str, Any]], str]] = [
    ("keywords:existence", lambda r: {"keywords": [r.choice(KEYWORDS)]},
     "Include the word \"{keywords[0]}\"."),
    ("change_case:english_lowercase", lambda r: {},
     "Use only lowercase letters, no capitals at all."),
    ("length_constraints:number_words",
     lambda r: {"relation": "less than", "num_words": 15},
     "Answer in fewer than 15 words."),
    ("startend:quotation", lambda r: {}, "Wrap your entire answer in double quotation marks."),
    ("change_case:english_capital", lambda r: {}, "Write your whole answer in capital letters."),
    ("detectable_format:title", lambda r: {},
     "Give it a title wrapped in double angular brackets, like <<title>>."),
]


def _instruction(rng: random.Random, index: int) -> Prompt:
    topic = rng.choice(TOPICS)
    ident, make_kwargs, sentence = CONSTRAINTS[index % len(CONSTRAINTS)]
    kwargs = make_kwargs(rng)
    task = rng.choice(["Write a short sentence about", "Describe", "Write two sentences about"])
    content = f"{task} {topic}. {sentence.format(**kwargs)}"
    return Prompt(
        id=f"instr-{index:05d}",
        messages=[{"role": "user", "content": content}],
        kind="instruction",
        meta={"task": "instruction", "instruction_id_list": [ident], "kwargs": [kwargs]},
    )


def builtin_prompts(name: str, num_prompts: int, seed: int) -> list[Prompt]:
    """`arithmetic`, `instructions`, or `demo-mix` (60% arithmetic, 40% instructions)."""
    rng = random.Random(seed)
    if name == "arithmetic":
        return [_arithmetic(rng, i) for i in range(num_prompts)]
    if name == "instructions":
        return [_instruction(rng, i) for i in range(num_prompts)]
    n_math = round(num_prompts * 0.6)
    prompts = [_arithmetic(rng, i) for i in range(n_math)]
    prompts += [_instruction(rng, i) for i in range(num_prompts - n_math)]
    rng.shuffle(prompts)
    return prompts


# ---------------------------------------------------------------------------------------
# Programmatic teachers: `fn(prompt) -> str`, registered for `backend: scripted`.

REFUSAL = (
    "Sorry, this solver only handles arithmetic word problems, so it cannot write a reply "
    "to this request."
)


def _apply(value: int, op: str, n: int) -> int:
    return {"+": value + n, "-": value - n, "*": value * n}[op]


def _steps(prompt: Prompt) -> list[tuple[int, str, int, int]] | None:
    if prompt.meta.get("task") != "arithmetic":
        return None
    value = prompt.meta["start"]
    out = []
    for op, n in prompt.meta["steps"]:
        new = _apply(value, op, n)
        out.append((value, op, n, new))
        value = new
    return out


def solver_verbose(prompt: Prompt) -> str:
    steps = _steps(prompt)
    if steps is None:
        return REFUSAL
    item = prompt.meta["item"]
    lines = [f"Let's solve this step by step. At the start there are {steps[0][0]} {item}."]
    for k, (before, op, n, after) in enumerate(steps, 1):
        lines.append(
            f"Step {k}: we {VERBS[op]} {n}, so {before} {op} {n} = {after} {item}."
        )
    lines.append(f"So the final number of {item} is {steps[-1][3]}.")
    lines.append(f"The answer is {steps[-1][3]}.")
    return "\n".join(lines)


def solver_concise(prompt: Prompt) -> str:
    steps = _steps(prompt)
    if steps is None:
        return REFUSAL
    expr = str(steps[0][0])
    for _, op, n, _ in steps:
        needs_brackets = op == "*" and ("+" in expr or "-" in expr)
        expr = f"({expr}) {op} {n}" if needs_brackets else f"{expr} {op} {n}"
    return f"{expr} = {steps[-1][3]}. The answer is {steps[-1][3]}."


def solver_quick(prompt: Prompt) -> str:
    """Mental arithmetic that only ever does the first step: right on one-step problems."""
    steps = _steps(prompt)
    if steps is None:
        return REFUSAL
    return f"The answer is {steps[0][3]}."


SCRIPTED: dict[str, Callable[[Prompt], str]] = {
    "solver-verbose": solver_verbose,
    "solver-concise": solver_concise,
    "solver-quick": solver_quick,
}

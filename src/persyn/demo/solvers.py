"""The demo's programmatic teachers: `fn(prompt) -> str`, for `backend: scripted`.

They read the structured problem from `meta` (never the text, and nothing is evaluated):
`solver-verbose` and `solver-concise` are always right and differ in style; `solver-quick`
answers in one line and is right only on one-step problems. Anything that is not an
arithmetic problem gets a refusal.
"""

from __future__ import annotations

from persyn.teachers.base import Prompt

VERBS = {"+": "add", "-": "subtract", "*": "multiply by"}
REFUSAL = (
    "Sorry, this solver only handles arithmetic word problems, so it cannot write a reply "
    "to this request."
)


def _apply(value: int, op: str, n: int) -> int:
    return {"+": value + n, "-": value - n, "*": value * n}[op]


def _steps(prompt: Prompt) -> list[tuple[int, str, int, int]] | None:
    """(before, op, operand, after) for each step, or None for a non-arithmetic prompt."""
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
    """Always right, a long step-by-step solution."""
    steps = _steps(prompt)
    if steps is None:
        return REFUSAL
    item = prompt.meta["item"]
    lines = [f"Let's solve this step by step. At the start there are {steps[0][0]} {item}."]
    for k, (before, op, n, after) in enumerate(steps, 1):
        lines.append(f"Step {k}: we {VERBS[op]} {n}, so {before} {op} {n} = {after} {item}.")
    lines.append(f"So the final number of {item} is {steps[-1][3]}.")
    lines.append(f"The answer is {steps[-1][3]}.")
    return "\n".join(lines)


def solver_concise(prompt: Prompt) -> str:
    """Always right, a one-line solution."""
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

"""The demo's built-in prompt sets: `fn(num_prompts, seed) -> list[Prompt]`, the signature
a user's own `prompts.builtin: module:function` has too.

Two task kinds, chosen so the best teacher differs per prompt (see METHOD.md, last part):

* arithmetic word problems of graded difficulty (1 to 3 steps) with reference answers:
  the packaged SmolLM2 almost never solves them, the programmatic solvers do;
* instruction prompts carrying IFEval-style verifiable constraints (instruction ids and
  kwargs in `meta`, checked by if-verifiable): a solver cannot answer them, an LLM
  teacher sometimes satisfies them, depending on its system prompt and the constraint.
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


def _word_problem(rng: random.Random, index: int) -> Prompt:
    """A word problem of 1 to 3 steps (by `index`), its structure in `meta` for the solvers."""
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
    "the ocean",
    "a rainy day",
    "your favourite food",
    "the moon",
    "a busy city street",
    "learning to ride a bike",
    "autumn leaves",
    "a friendly dog",
    "coffee",
    "a library",
    "mountains",
    "the first day of school",
    "a summer picnic",
    "trains",
    "gardening",
]
KEYWORDS = ["blue", "happy", "light", "quiet", "green", "music", "warm", "smile"]
FORBIDDEN = ["very", "really", "nice", "good", "thing", "beautiful", "big", "great"]

Constraint = tuple[str, Callable[[random.Random], dict[str, Any]], str]

# (IFEval instruction id, kwargs factory, instruction sentence). The first six are the
# `demo-mix` set; `instructions` draws from all of them. Left out: checks that need NLTK
# data files (number_sentences, capital_word_frequency), which cannot be fetched offline.
CONSTRAINTS: list[Constraint] = [
    (
        "keywords:existence",
        lambda r: {"keywords": [r.choice(KEYWORDS)]},
        'Include the word "{keywords[0]}".',
    ),
    (
        "change_case:english_lowercase",
        lambda r: {},
        "Use only lowercase letters, no capitals at all.",
    ),
    (
        "length_constraints:number_words",
        lambda r: {"relation": "less than", "num_words": 15},
        "Answer in fewer than 15 words.",
    ),
    ("startend:quotation", lambda r: {}, "Wrap your entire answer in double quotation marks."),
    ("change_case:english_capital", lambda r: {}, "Write your whole answer in capital letters."),
    (
        "detectable_format:title",
        lambda r: {},
        "Give it a title wrapped in double angular brackets, like <<title>>.",
    ),
    ("punctuation:no_comma", lambda r: {}, "Do not use any commas."),
    (
        "keywords:forbidden_words",
        lambda r: {"forbidden_words": r.sample(FORBIDDEN, 2)},
        'Do not use the words "{forbidden_words[0]}" or "{forbidden_words[1]}".',
    ),
    (
        "keywords:frequency",
        lambda r: {"keyword": r.choice(KEYWORDS), "frequency": 2, "relation": "at least"},
        'Use the word "{keyword}" at least {frequency} times.',
    ),
    (
        "keywords:letter_frequency",
        lambda r: {"letter": r.choice("aeiou"), "let_frequency": 6, "let_relation": "at least"},
        'Use the letter "{letter}" at least {let_frequency} times.',
    ),
    (
        "length_constraints:number_paragraphs",
        lambda r: {"num_paragraphs": 2},
        "Write exactly {num_paragraphs} paragraphs, separated by the markdown divider ***.",
    ),
    (
        "detectable_content:postscript",
        lambda r: {"postscript_marker": "P.S."},
        "End with a postscript that starts with {postscript_marker}",
    ),
    (
        "detectable_content:number_placeholders",
        lambda r: {"num_placeholders": 1},
        "Include at least {num_placeholders} placeholder in square brackets, like [name].",
    ),
    (
        "detectable_format:number_bullet_lists",
        lambda r: {"num_bullets": r.choice([2, 3])},
        "Answer with exactly {num_bullets} markdown bullet points, like: * point.",
    ),
    (
        "detectable_format:number_highlighted_sections",
        lambda r: {"num_highlights": 1},
        "Highlight at least {num_highlights} part with markdown, like *highlighted part*.",
    ),
    ("detectable_format:json_format", lambda r: {}, "Give your whole answer as JSON."),
    (
        "startend:end_checker",
        lambda r: {"end_phrase": "Is there anything else I can help with?"},
        'Finish with the exact phrase "{end_phrase}" and nothing after it.',
    ),
    (
        "detectable_format:multiple_sections",
        lambda r: {"section_spliter": "Section", "num_sections": 2},
        'Split your answer into {num_sections} parts, each starting with "{section_spliter} N".',
    ),
]
DEMO_MIX_CONSTRAINTS = CONSTRAINTS[:6]
SHORT_TASKS = ["Write a short sentence about", "Describe", "Write two sentences about"]
TASKS = ["Write about", "Describe", "Tell me about", "Write a short note about"]


# Pairs IFEval's conflict table lets through that no response can satisfy together here.
EXTRA_CONFLICTS = {
    frozenset(pair)
    for pair in [
        ("change_case:english_lowercase", "detectable_format:multiple_sections"),  # "Section"
        ("change_case:english_capital", "detectable_format:multiple_sections"),
        ("change_case:english_lowercase", "detectable_content:postscript"),  # "P.S."
        ("startend:end_checker", "detectable_content:postscript"),  # both want the last word
        ("startend:end_checker", "startend:quotation"),
        ("length_constraints:number_words", "length_constraints:number_paragraphs"),
    ]
}


def compatible(a: str, b: str) -> bool:
    """Two instruction ids that can hold together (IFEval's conflict table, both ways)."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    return (
        a != b
        and b not in INSTRUCTION_CONFLICTS.get(a, ())
        and a not in INSTRUCTION_CONFLICTS.get(b, ())
        and frozenset((a, b)) not in EXTRA_CONFLICTS
    )


def _constrained(
    rng: random.Random,
    ident: str,
    constraints: list[Constraint],
    tasks: list[str],
    topics: list[str] = TOPICS,
) -> Prompt:
    """A prompt about a random topic carrying `constraints` (ids and kwargs in `meta`)."""
    topic = rng.choice(topics)
    kwargs = [make_kwargs(rng) for _, make_kwargs, _ in constraints]
    task = rng.choice(tasks)
    sentences = [c[2].format(**k) for c, k in zip(constraints, kwargs, strict=True)]
    return Prompt(
        id=ident,
        messages=[{"role": "user", "content": " ".join([f"{task} {topic}.", *sentences])}],
        kind="instruction",
        meta={
            "task": "instruction",
            "instruction_id_list": [c[0] for c in constraints],
            "kwargs": kwargs,
        },
    )


def _basic_instruction(rng: random.Random, index: int) -> Prompt:
    """`demo-mix`: one of the six basic constraints, in turn."""
    chosen = DEMO_MIX_CONSTRAINTS[index % len(DEMO_MIX_CONSTRAINTS)]
    return _constrained(rng, f"instr-{index:05d}", [chosen], SHORT_TASKS)


def tiered_instruction(rng: random.Random, index: int, topics: list[str] = TOPICS) -> Prompt:
    """`instructions`: every constraint in turn; odd prompts (the harder tier) add a
    second, compatible constraint drawn at random."""
    first = CONSTRAINTS[(index // 2) % len(CONSTRAINTS)]
    chosen = [first]
    if index % 2:
        chosen.append(rng.choice([c for c in CONSTRAINTS if compatible(first[0], c[0])]))
    prompt = _constrained(rng, f"instr-{index:05d}", chosen, TASKS, topics)
    prompt.meta["tier"] = len(chosen)
    return prompt


def arithmetic(num_prompts: int, seed: int) -> list[Prompt]:
    """`arithmetic`: word problems of 1, 2 and 3 steps, in turn."""
    rng = random.Random(seed)
    return [_word_problem(rng, i) for i in range(num_prompts)]


def instructions(num_prompts: int, seed: int) -> list[Prompt]:
    """`instructions`: 18 IFEval constraint kinds, one or two per prompt."""
    rng = random.Random(seed)
    return [tiered_instruction(rng, i) for i in range(num_prompts)]


def demo_mix(num_prompts: int, seed: int) -> list[Prompt]:
    """`demo-mix`: 60% arithmetic, 40% instructions with the six basic constraints."""
    rng = random.Random(seed)
    n_math = round(num_prompts * 0.6)
    prompts = [_word_problem(rng, i) for i in range(n_math)]
    prompts += [_basic_instruction(rng, i) for i in range(num_prompts - n_math)]
    rng.shuffle(prompts)
    return prompts

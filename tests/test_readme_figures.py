"""The figures README.md states about persyn's behaviour, each checked against the code, so
the README cannot drift from what persyn does. (The demo's router results come from the
slow demo test; the vLLM scorer's agreement from `tests/test_vllm_backend.py`.)"""

from __future__ import annotations

import yaml

from persyn.cli import demo_config_path
from persyn.config import RouterConfig, RunConfig
from persyn.config.rewards import RewardsConfig
from persyn.data import builtin_prompts
from persyn.demo.prompts import CONSTRAINTS


def test_configuration_defaults() -> None:
    """ "alpha = 0.4"; "`minmax` (default ...)"; "`patience` (default 20 ...)"; ties "are
    skipped or trained towards 0.5 (`ties: half`)"; "`max_error_rate` (default 0.05)"."""
    rewards = RewardsConfig()
    assert rewards.alpha == 0.4 and rewards.normalization == "minmax"
    router = RouterConfig()
    assert router.patience == 20 and router.ties == "skip"
    assert RunConfig.model_fields["max_error_rate"].default == 0.05


def test_the_demo_prompts() -> None:
    """ "400 generated with a fixed seed: 60% arithmetic word problems of 1 to 3 steps with
    reference answers, 40% instruction prompts with IFEval-style verifiable constraints
    (lowercase, fewer than 15 words, include a keyword, quotes, ...)"; "alpha = 0.4"."""
    demo = yaml.safe_load(demo_config_path().read_text())
    assert demo["prompts"] == {"builtin": "demo-mix", "num_prompts": 400, "seed": 0}
    assert demo["rewards"]["alpha"] == 0.4
    prompts = builtin_prompts("demo-mix", 400, seed=0)
    math = [p for p in prompts if p.kind == "math"]
    instructions = [p for p in prompts if p.kind == "instruction"]
    assert len(math) == 240 and len(instructions) == 160
    assert all(p.reference is not None for p in math)
    assert {len(p.meta["steps"]) for p in math} == {1, 2, 3}
    constraints = {i for p in instructions for i in p.meta["instruction_id_list"]}
    assert {
        "change_case:english_lowercase",
        "length_constraints:number_words",
        "keywords:existence",
        "startend:quotation",
    } <= constraints
    words = [
        k
        for p in instructions
        for k in p.meta["kwargs"]
        if k.get("relation") == "less than" and "num_words" in k
    ]
    assert words and {k["num_words"] for k in words} == {15}


def test_instruction_set_has_18_constraint_kinds() -> None:
    """ "the built-in `instructions` set carries IFEval constraints of 18 kinds"."""
    assert len({c[0] for c in CONSTRAINTS}) == 18
    prompts = builtin_prompts("instructions", 2 * len(CONSTRAINTS), seed=0)
    assert len({i for p in prompts for i in p.meta["instruction_id_list"]}) == 18

"""Functions a config names: the user's own `module:function`, or a built-in name.

A built-in name is only an alias for a `module:function` string, so the demo's prompt sets
and solvers load through the same path as user code, and core modules name the demo
without importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from persyn.config import ConfigError

# `prompts.builtin`: fn(num_prompts, seed) -> list[Prompt]
PROMPT_SETS: dict[str, str] = {
    "demo-mix": "persyn.demo.prompts:demo_mix",
    "arithmetic": "persyn.demo.prompts:arithmetic",
    "instructions": "persyn.demo.prompts:instructions",
}
# `model` of a `backend: scripted` teacher: fn(prompt) -> str
SCRIPTED_TEACHERS: dict[str, str] = {
    "solver-verbose": "persyn.demo.solvers:solver_verbose",
    "solver-concise": "persyn.demo.solvers:solver_concise",
    "solver-quick": "persyn.demo.solvers:solver_quick",
}


def locate(spec: str, what: str, builtins: Mapping[str, str]) -> tuple[str, str]:
    """(module, function) that `spec` names, importing nothing (so configs can check it)."""
    module, _, function = builtins.get(spec, spec).partition(":")
    if not (module and function):
        raise ConfigError(
            f"{what} {spec!r}: use a built-in ({', '.join(builtins)}) or module:function"
        )
    return module, function


def resolve(spec: str, what: str, builtins: Mapping[str, str]) -> Callable[..., Any]:
    """The function `spec` names; `what` (e.g. the config key) starts each one-line error."""
    module, function = locate(spec, what, builtins)
    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{what} {spec!r}: {err} (is the module on PYTHONPATH?)") from None
    if not callable(fn):
        raise ConfigError(f"{what} {spec!r}: {module}.{function} is not a function")
    return fn

"""The built-in names a config may give instead of a `module:function`: each an alias for
one, so the demo's prompt sets and solvers load through the same path as user code.

Plain data and a name check that imports nothing, here so the config checks a name without
importing what it names (`persyn.plugins` loads the function).
"""

from __future__ import annotations

from collections.abc import Mapping

from persyn.config.base import ConfigError

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

"""Programmatic teachers: a Python function `fn(prompt) -> str` answers each prompt.

`model` is a built-in name from `persyn.demo.SCRIPTED` or `module:function` of the user's
own code (named in the config by its author; model output is never executed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from persyn.config import ConfigError
from persyn.demo import SCRIPTED
from persyn.teachers.base import Generation, Prompt, Teacher


def resolve_function(spec: str) -> Callable[[Prompt], str]:
    if spec in SCRIPTED:
        return SCRIPTED[spec]
    module, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(
            f"scripted model {spec!r}: use a built-in ({', '.join(SCRIPTED)}) or module:function"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"scripted model {spec!r}: {err}") from None


class ScriptedTeacher(Teacher):
    def load(self) -> None:
        self.fn = resolve_function(self.cfg.model)

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        out = []
        for p in prompts:
            try:
                text = self.fn(p)
                out.append(Generation(p.id, text, 0, len(text.split())))
            except Exception as err:  # a user function's bug becomes an error row
                out.append(Generation(p.id, error=f"{type(err).__name__}: {err}"))
        return out

"""Programmatic teachers: a Python function `fn(prompt) -> str` answers each prompt.

`model` is a built-in name from `persyn.demo.SCRIPTED` or `module:function` of the user's
own code (named in the config by its author; model output is never executed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from persyn.config import ConfigError, TeacherConfig
from persyn.demo import SCRIPTED
from persyn.teachers.base import Generation, Prompt, Teacher


def resolve_function(spec: str, teacher: str) -> Callable[[Prompt], str]:
    if spec in SCRIPTED:
        return SCRIPTED[spec]
    where = f"teacher {teacher!r}: scripted model {spec!r}"
    module, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"{where}: use a built-in ({', '.join(SCRIPTED)}) or module:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}: {err} (is the module on PYTHONPATH?)") from None


class ScriptedTeacher(Teacher):
    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        # Resolved on construction, so `persyn validate` catches a wrong name up front.
        self.fn = resolve_function(cfg.model, cfg.name)

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        out = []
        for p in prompts:
            try:
                text = self.fn(p)
                out.append(Generation(p.id, text, 0, len(text.split())))
            except Exception as err:  # a user function's bug becomes an error row
                out.append(Generation(p.id, error=f"{type(err).__name__}: {err}"))
        return out

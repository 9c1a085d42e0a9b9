"""Programmatic teachers: a Python function `fn(prompt) -> str` answers each prompt.

`model` is a built-in name (`persyn.plugins.SCRIPTED_TEACHERS`) or `module:function` of
the user's own code (named in the config by its author; model output is never executed).
"""

from __future__ import annotations

from persyn.config import TeacherConfig
from persyn.plugins import SCRIPTED_TEACHERS, resolve
from persyn.teachers.base import Generation, Prompt, Teacher


class ScriptedTeacher(Teacher):
    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        # Resolved on construction, so `persyn validate` catches a wrong name up front.
        self.fn = resolve(cfg.model, f"teacher {cfg.name!r}: scripted model", SCRIPTED_TEACHERS)

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        out = []
        for p in prompts:
            try:
                text = self.fn(p)
                out.append(Generation(p.id, text, 0, len(text.split())))
            except Exception as err:  # a user function's bug becomes an error row
                out.append(Generation(p.id, error=f"{type(err).__name__}: {err}"))
        return out

"""`backend: imported`: a teacher known only from `calibration.source` data.

It has answers to calibration prompts (the data's) and no way to answer anything else:
`calibrate` never asks it, `route` never picks it, and anything else that asks it to
generate (a baseline, a rerun with `fill_missing`) gets one line saying why not.
"""

from __future__ import annotations

from typing import ClassVar

from persyn.config import Section, TeacherConfig, backend_options
from persyn.teachers.base import Generation, Prompt, Teacher


class ImportedTeacher(Teacher):
    can_generate: ClassVar[bool] = False
    model_required: ClassVar[bool] = False

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        backend_options(Section, cfg)  # it takes no options: any key is a typo

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        raise RuntimeError(
            f"teacher {self.cfg.name!r} has no generation backend (backend: imported): it only "
            "has the answers imported from calibration.source; give it a real backend "
            "(hf, openai, vllm, scripted) to generate"
        )

from persyn.teachers.base import BACKENDS, Generation, Prompt, Teacher, make_teacher

__all__ = ["BACKENDS", "Generation", "Prompt", "Teacher", "make_teacher"]

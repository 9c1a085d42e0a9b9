"""Where the heavy work runs. Stages hand an executor whole jobs and a sink for results;
the executor owns batching and workers, so the same stage runs locally or on Ray.

Each sink call persists the rows it receives (see `persyn.store.RowLog`), so a job killed
midway loses at most the batch in flight.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from persyn.config import StudentConfig, TeacherConfig
from persyn.progress import bar
from persyn.rewards.learnability import LearnabilityScore, LearnabilityScorer
from persyn.teachers.base import Generation, Prompt, make_teacher

GenerationSink = Callable[[list[Generation]], None]
ScoreSink = Callable[[list[int], list[LearnabilityScore]], None]
ScorePair = tuple[list[dict[str, str]], str]


class Executor(ABC):
    @abstractmethod
    def generate(self, teacher: TeacherConfig, prompts: list[Prompt], sink: GenerationSink) -> None:
        """Answer every prompt with `teacher`, passing results to `sink` as they finish."""

    @abstractmethod
    def learnability(self, student: StudentConfig, pairs: list[ScorePair], sink: ScoreSink) -> None:
        """Score every (messages, response) pair; `sink(indices, scores)` as they finish."""


class LocalExecutor(Executor):
    """In this process, one batch at a time."""

    # Pairs per scorer call, each call's rows saved before the next: large enough for the
    # scorer's length bucketing (and vLLM's scheduler) to see a real batch.
    def __init__(self, score_chunk: int = 512) -> None:
        self.score_chunk = score_chunk

    def generate(self, teacher: TeacherConfig, prompts: list[Prompt], sink: GenerationSink) -> None:
        if not prompts:
            return
        backend = make_teacher(teacher)
        backend.load()
        try:
            with bar(f"generate {teacher.name}", len(prompts)) as progress:
                for start in range(0, len(prompts), backend.batch_size):
                    batch = prompts[start : start + backend.batch_size]
                    sink(backend.generate(batch))
                    progress.advance(len(batch))
        finally:
            backend.unload()

    def learnability(self, student: StudentConfig, pairs: list[ScorePair], sink: ScoreSink) -> None:
        if not pairs:
            return
        scorer = LearnabilityScorer(student)
        with bar("score learnability", len(pairs)) as progress:
            for start in range(0, len(pairs), self.score_chunk):
                idx = list(range(start, min(start + self.score_chunk, len(pairs))))
                sink(idx, scorer.score([pairs[i] for i in idx]))
                progress.advance(len(idx))


EXECUTORS: dict[str, Callable[[], Executor]] = {"local": LocalExecutor}

"""Where the heavy work runs. Stages hand an executor whole jobs and a sink for results;
the executor owns batching and workers, so the same stage runs locally or on Ray.

Each sink call persists the rows it receives (see `persyn.store.RowLog`, one fsync per
call), so a job killed midway loses at most the rows not yet handed to the sink.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np

from persyn.config import ExecutorConfig, LearnabilitySignalConfig, StudentConfig, TeacherConfig
from persyn.progress import bar
from persyn.registry import Registry
from persyn.rewards.learnability import LearnabilityScore, LearnabilityScorer
from persyn.teachers.base import Generation, Prompt, make_teacher

GenerationSink = Callable[[list[Generation]], None]
ScoreSink = Callable[[list[int], list[LearnabilityScore]], None]
ScorePair = tuple[list[dict[str, str]], str]
# (indices, scores [len(indices), teachers], novelty [len(indices)], NaN: none)
RouterScoreSink = Callable[[list[int], np.ndarray, np.ndarray], None]


class Executor(ABC):
    @classmethod
    def from_config(cls, cfg: ExecutorConfig, device: str) -> Executor:
        """The executor `executor` in the config asks for (`device`: the run's `device`)."""
        return cls()

    @abstractmethod
    def generate(
        self,
        teacher: TeacherConfig,
        prompts: list[Prompt],
        sink: GenerationSink,
        resume_file: Path | None = None,
    ) -> None:
        """Answer every prompt with `teacher`, passing results to `sink` as they finish;
        `resume_file` is the teacher's `Teacher.resume_file`."""

    @abstractmethod
    def learnability(
        self,
        student: StudentConfig,
        signal: LearnabilitySignalConfig,
        pairs: list[ScorePair],
        sink: ScoreSink,
    ) -> None:
        """Score every (messages, response) pair with the student, as `signal` reads it
        (`LearnabilityScorer`); `sink(indices, scores)` as they finish."""

    @abstractmethod
    def router_scores(
        self, router_dir: Path, teachers: list[str], texts: list[str], sink: RouterScoreSink
    ) -> None:
        """Score every prompt text with the router saved in `router_dir` (trained for
        `teachers`); `sink(indices, scores [len(indices), teachers], novelty [len(indices)])`
        as they finish (`Router.novelty`)."""


# Generated rows reach the stage's sink (one fsync per call) at least this often. Batches
# are small (8 prompts by default) and a fast teacher answers thousands a second: one sink
# call per batch made the fsync most of the stage's time. A kill loses at most this much.
SINK_ROWS = 512
SINK_SECONDS = 2.0
# Pairs per scorer call, each call's rows saved before the next: large enough for the
# scorer's length bucketing (and vLLM's scheduler) to see a real batch.
SCORE_CHUNK = 512
# Prompts per router call: each chunk's scores are logged before the next, so a killed
# `route` resumes where it stopped.
ROUTE_CHUNK = 256


class GroupedSink:
    """Collects generated rows and passes them on every `SINK_ROWS` rows or `SINK_SECONDS`,
    whichever comes first; `flush` passes the rest (call it also when a batch failed, so
    what was answered is kept). Both executors' `generate` go through it."""

    def __init__(self, sink: GenerationSink) -> None:
        self.sink = sink
        self.pending: list[Generation] = []
        self.last = time.monotonic()

    def add(self, rows: list[Generation]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= SINK_ROWS or time.monotonic() - self.last >= SINK_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            rows, self.pending = self.pending, []
            self.sink(rows)
        self.last = time.monotonic()


class LocalExecutor(Executor):
    """In this process: generation as the teacher streams it (`Teacher.stream`), scores
    one chunk at a time."""

    def __init__(self, score_chunk: int = SCORE_CHUNK, route_chunk: int = ROUTE_CHUNK) -> None:
        self.score_chunk = score_chunk
        self.route_chunk = route_chunk

    def generate(
        self,
        teacher: TeacherConfig,
        prompts: list[Prompt],
        sink: GenerationSink,
        resume_file: Path | None = None,
    ) -> None:
        if not prompts:
            return
        backend = make_teacher(teacher)
        backend.resume_file = resume_file
        backend.load()
        grouped = GroupedSink(sink)
        try:
            with bar(f"generate {teacher.name}", len(prompts)) as progress:
                for generation in backend.stream(prompts):  # each row as it finishes
                    grouped.add([generation])
                    progress.advance(1)
        finally:
            # Rows saved before unload: a backend may then drop what resumes them.
            try:
                grouped.flush()
            finally:
                backend.unload()

    def learnability(
        self,
        student: StudentConfig,
        signal: LearnabilitySignalConfig,
        pairs: list[ScorePair],
        sink: ScoreSink,
    ) -> None:
        if not pairs:
            return
        scorer = LearnabilityScorer(student, signal)
        with bar("score learnability", len(pairs)) as progress:
            for start in range(0, len(pairs), self.score_chunk):
                idx = list(range(start, min(start + self.score_chunk, len(pairs))))
                sink(idx, scorer.score([pairs[i] for i in idx]))
                progress.advance(len(idx))

    def router_scores(
        self, router_dir: Path, teachers: list[str], texts: list[str], sink: RouterScoreSink
    ) -> None:
        if not texts:
            return
        from persyn.router.routers import Router  # torch and the encoder, only when used

        router = Router.load(router_dir, teachers)  # once: every chunk reuses the model
        with bar("route: router scores", len(texts)) as progress:
            for start in range(0, len(texts), self.route_chunk):
                idx = list(range(start, min(start + self.route_chunk, len(texts))))
                chunk = [texts[i] for i in idx]
                sink(idx, router.scores(chunk), router.novelty(chunk))
                progress.advance(len(idx))


# Plug-ins join through the `persyn.executors` entry points.
EXECUTORS: Registry[Executor] = Registry(
    "persyn.executors",
    "executor",
    Executor,
    {"local": LocalExecutor, "ray": "persyn.executors_ray:RayExecutor"},
)

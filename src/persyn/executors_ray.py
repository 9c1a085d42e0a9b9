"""Ray executor (`executor: {kind: ray}`, `pip install 'persyn[ray]'`): generation,
learnability scoring and the router's scores (`route`) run as Ray Data `map_batches` over
a pool of actors, one model replica per actor, `executor.concurrency` replicas with
`executor.num_gpus` GPUs each (the student, the router and `hf` teachers; HTTP and
programmatic teachers take none). Models in a replica follow the run's `device`. On a cluster
started with `ray start` (`executor.address: auto`) the replicas spread over the nodes;
the driver only streams results back.

vLLM teachers run through Ray Data's own vLLM processor (`ray.data.llm`) where the
installed Ray has it, so tensor/pipeline parallelism and GPU placement are Ray's; other
backends, and vLLM on an older Ray, run in the generic replica actor.

Results stream back one block at a time as actors finish them (each input block is one
batch; generated rows are grouped as in the local executor, scores and router scores go
to the sink per block), so a job killed midway keeps what had reached the sink. Nodes need the same
Python environment, the model files (or hub access), for `route` the run directory's
`router/` folder, and for HTTP teachers the API key variable set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts import RouterCheckpoint
from persyn.config import (
    ConfigError,
    ExecutorConfig,
    LearnabilitySignalConfig,
    StudentConfig,
    TeacherConfig,
)
from persyn.executors import (
    ROUTE_CHUNK,
    SCORE_CHUNK,
    Executor,
    GenerationSink,
    GroupedSink,
    RouterScoreSink,
    ScorePair,
    ScoreSink,
)
from persyn.models import use_device
from persyn.progress import bar
from persyn.rewards.learnability import LearnabilityScore, LearnabilityScorer
from persyn.teachers.base import BACKENDS, CUT_AT_LIMIT, Generation, Prompt, make_teacher

# Teachers of separate lanes (`persyn.stages.lanes`) start their jobs from threads: one
# `ray.init` between them.
_INIT = threading.Lock()


class TeacherReplica:
    """A Ray actor holding one teacher: loads it once, then answers batches of prompts."""

    def __init__(self, config: dict[str, Any], device: str) -> None:
        use_device(device)  # the driver's rule, in this actor's process
        self.teacher = make_teacher(TeacherConfig.model_validate(config))
        self.teacher.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [Prompt.from_row(json.loads(item)) for item in batch["item"]]
        results = self.teacher.generate(prompts)
        return {"result": np.array([json.dumps(asdict(g)) for g in results])}


class StudentReplica:
    """A Ray actor holding the student: scores batches of (messages, response) pairs."""

    def __init__(self, config: dict[str, Any], device: str) -> None:
        use_device(device)
        self.scorer = LearnabilityScorer(
            StudentConfig.model_validate(config["student"]),
            LearnabilitySignalConfig.model_validate(config["signal"]),
        )
        self.scorer.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [json.loads(item) for item in batch["item"]]
        scores = self.scorer.score([(r["messages"], r["response"]) for r in rows])
        results = [{"index": r["index"], **asdict(s)} for r, s in zip(rows, scores, strict=True)]
        return {"result": np.array([json.dumps(r) for r in results])}


class RouterReplica:
    """A Ray actor holding the trained router (its encoder or LM loaded once): scores
    batches of prompt texts."""

    def __init__(self, config: dict[str, Any], device: str) -> None:
        from persyn.router.routers import Router

        use_device(device)
        self.router = Router.load(Path(config["router_dir"]), config["teachers"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [json.loads(item) for item in batch["item"]]
        texts = [r["text"] for r in rows]
        scores, novelty = self.router.scores(texts), self.router.novelty(texts)
        results = [
            {"index": r["index"], "scores": s.tolist(), "novelty": float(n)}
            for r, s, n in zip(rows, scores, novelty, strict=True)
        ]
        return {"result": np.array([json.dumps(r) for r in results])}


class RayExecutor(Executor):
    def __init__(self, cfg: ExecutorConfig, device: str = "auto") -> None:
        self.cfg = cfg
        self.device = device  # `RunConfig.device`, applied in every replica

    @classmethod
    def from_config(cls, cfg: ExecutorConfig, device: str) -> Executor:
        return cls(cfg, device)

    def _ray(self) -> Any:
        try:
            import ray
            import ray.data
        except ModuleNotFoundError:
            raise ConfigError("executor.kind ray needs Ray: pip install 'persyn[ray]'") from None
        with _INIT:
            if not ray.is_initialized():
                ray.init(address=self.cfg.address)
        # persyn shows its own progress bar per stage
        ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def _stream(
        self,
        items: list[str],
        replica: type,
        config: dict[str, Any],
        batch_size: int,
        num_gpus: float,
    ) -> Iterator[list[dict[str, Any]]]:
        """Run `replica` over `items` on the actor pool; yield decoded results per batch."""
        ray = self._ray()
        dataset = _one_block_per_batch(ray, {"item": items}, batch_size)
        results = dataset.map_batches(
            replica,
            fn_constructor_kwargs={"config": config, "device": self.device},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.cfg.concurrency),
            num_gpus=num_gpus,
        )
        for block in results.iter_batches(batch_size=None, batch_format="numpy"):
            yield [json.loads(r) for r in block["result"]]

    def generate(
        self,
        teacher: TeacherConfig,
        prompts: list[Prompt],
        sink: GenerationSink,
        resume_file: Path | None = None,  # replicas keep no resume file
    ) -> None:
        if not prompts:
            return
        batches = (
            self._vllm_processor(teacher, prompts)
            if teacher.backend == "vllm" and _has_ray_llm()
            else self._stream(
                [json.dumps(p.to_row()) for p in prompts],
                TeacherReplica,
                teacher.model_dump(mode="json"),
                teacher.batch_size,
                # HTTP and programmatic teachers run no model here: reserve no GPU for them
                self.cfg.num_gpus if BACKENDS.load(teacher.backend).loads_model else 0,
            )
        )
        grouped = GroupedSink(sink)  # blocks are one teacher batch: group their fsyncs
        try:
            with bar(f"generate {teacher.name} (ray)", len(prompts)) as progress:
                for rows in batches:
                    grouped.add([Generation(**r) for r in rows])
                    progress.advance(len(rows))
        finally:
            grouped.flush()

    def learnability(
        self,
        student: StudentConfig,
        signal: LearnabilitySignalConfig,
        pairs: list[ScorePair],
        sink: ScoreSink,
    ) -> None:
        if not pairs:
            return
        items = [
            json.dumps({"index": i, "messages": messages, "response": response})
            for i, (messages, response) in enumerate(pairs)
        ]
        config = {"student": student.model_dump(mode="json"), "signal": signal.model_dump()}
        with bar("score learnability (ray)", len(pairs)) as progress:
            for rows in self._stream(items, StudentReplica, config, SCORE_CHUNK, self.cfg.num_gpus):
                sink([r.pop("index") for r in rows], [LearnabilityScore(**r) for r in rows])
                progress.advance(len(rows))

    def router_scores(
        self, router_dir: Path, teachers: list[str], texts: list[str], sink: RouterScoreSink
    ) -> None:
        if not texts:
            return
        items = [json.dumps({"index": i, "text": t}) for i, t in enumerate(texts)]
        config = {"router_dir": str(router_dir.resolve()), "teachers": teachers}
        from persyn.router.routers import ROUTERS  # torch, only when used

        kind = RouterCheckpoint(router_dir).meta()["router"]
        # Baseline routers hold no model: reserve no GPU for them.
        gpus = self.cfg.num_gpus if ROUTERS.load(kind).loads_model else 0
        with bar("route: router scores (ray)", len(texts)) as progress:
            for rows in self._stream(items, RouterReplica, config, ROUTE_CHUNK, gpus):
                sink(
                    [r["index"] for r in rows],
                    np.array([r["scores"] for r in rows]),
                    np.array([r["novelty"] for r in rows], dtype=float),
                )
                progress.advance(len(rows))

    def _vllm_processor(
        self, teacher: TeacherConfig, prompts: list[Prompt]
    ) -> Iterator[list[dict[str, Any]]]:
        """Ray Data's vLLM processor: chat template, tokenise, generate, detokenise."""
        import ray
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        from persyn.teachers.vllm import VLLMTeacher

        self._ray()
        backend = VLLMTeacher(teacher)
        processor = build_processor(
            vLLMEngineProcessorConfig(
                model_source=backend.model_source(),
                engine_kwargs=backend.engine_kwargs(),
                concurrency=self.cfg.concurrency,
                batch_size=teacher.batch_size,
                # a failed row (e.g. a prompt longer than the context) becomes an error row
                should_continue_on_error=True,
            ),
            preprocess=_VLLMRequest(backend.sampling_params()),
        )
        columns = {
            "prompt_id": [p.id for p in prompts],
            "messages": [json.dumps(backend.chat(p)) for p in prompts],
        }
        dataset = _one_block_per_batch(ray, columns, teacher.batch_size)
        limit = teacher.generation.max_new_tokens
        for block in processor(dataset).iter_batches(batch_size=None, batch_format="pandas"):
            rows = []
            for row in block.to_dict("records"):
                error = row.get("__inference_error__") or None
                tokens = int(row.get("num_generated_tokens") or 0)
                rows.append(
                    {
                        "prompt_id": row["prompt_id"],
                        "text": (row.get("generated_text") or "").strip(),
                        "prompt_tokens": int(row.get("num_input_tokens") or 0),
                        "completion_tokens": tokens,
                        "error": error,
                        # Ray's output has no finish reason: an answer as long as the limit
                        # was cut there (or, rarely, ended on its last allowed token)
                        "finish_reason": None
                        if error
                        else (CUT_AT_LIMIT if tokens >= limit else "stop"),
                    }
                )
            yield rows


class _VLLMRequest:
    """Ray Data preprocess step: a row's chat messages plus the teacher's sampling params."""

    def __init__(self, sampling_params: dict[str, Any]) -> None:
        self.sampling_params = sampling_params

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt_id": row["prompt_id"],
            "messages": json.loads(row["messages"]),
            "sampling_params": self.sampling_params,
        }


def _one_block_per_batch(ray: Any, columns: dict[str, list[str]], batch_size: int) -> Any:
    """A dataset of string columns cut into blocks of `batch_size` rows: blocks are what
    stream back to the driver, so each batch is saved as soon as its actor finishes it."""
    import pyarrow as pa

    n = len(next(iter(columns.values())))
    return ray.data.from_arrow(
        [
            pa.table({name: values[start : start + batch_size] for name, values in columns.items()})
            for start in range(0, n, batch_size)
        ]
    )


def _has_ray_llm() -> bool:
    """Whether this Ray has `ray.data.llm.build_processor` (older ones named it otherwise)."""
    try:
        from ray.data.llm import build_processor  # noqa: F401
    except ImportError:
        return False
    return True

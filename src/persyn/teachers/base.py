"""The teacher interface: one small abstract method, `generate(requests) -> results`;
`stream(requests)` yields results as they finish (by default batch by batch over
`generate`; the HTTP backend keeps a bounded pool of requests over the whole list).

Backends are named by registry key in the config (`BACKENDS`, which plug-ins join through
the `persyn.teachers` entry points) and imported only when used, so an optional dependency
(openai, vllm, ray) is needed only by the runs that use it. What a backend can do is
declared on its class (`can_generate`, `model_required`, `loads_model`, `parallel`) and
asked there, never inferred from its name.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from persyn.config import ConfigError, TeacherConfig
from persyn.registry import Registry


@dataclass
class Prompt:
    """A normalised prompt: chat messages plus what the rewards need."""

    id: str
    messages: list[dict[str, str]]
    kind: str = "instruction"
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The prompt as plain text (what routers read)."""
        return "\n".join(m["content"] for m in self.messages if m["role"] != "assistant")

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": self.messages,
            "kind": self.kind,
            "reference": self.reference,
            "meta": self.meta,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Prompt:
        return cls(row["id"], row["messages"], row["kind"], row.get("reference"), row["meta"])


#: `Generation.finish_reason` of an answer cut at `max_new_tokens` (the word OpenAI's API
#: and vLLM use)
CUT_AT_LIMIT = "length"


@dataclass
class Generation:
    """One teacher response; `error` set (and `text` empty) when the request failed.

    `finish_reason` says why generation stopped, in the words of OpenAI's API: `stop` (the
    model ended its answer, or a stop string did), `length` (`CUT_AT_LIMIT`: cut at
    `max_new_tokens`), or what a server sent; None where the backend cannot tell.

    `reasoning` is a reasoning model's thinking, apart from the answer in `text`: what a
    server sent as such, or the think block `reasoning_apart` takes out of the text."""

    prompt_id: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    finish_reason: str | None = None
    reasoning: str | None = None

    @property
    def truncated(self) -> bool:
        """Cut at `max_new_tokens`: the answer may end mid-sentence."""
        return self.finish_reason == CUT_AT_LIMIT

    def reasoning_apart(self, think_tags: tuple[str, str] | None) -> Generation:
        """This generation with a leading think block moved from `text` to `reasoning`
        (unless a server already sent the reasoning apart, or `think_tags` is None)."""
        if self.reasoning is not None or think_tags is None or self.error is not None:
            return self
        reasoning, answer = split_reasoning(self.text, think_tags)
        return self if reasoning is None else replace(self, text=answer, reasoning=reasoning)


def split_reasoning(text: str, think_tags: tuple[str, str]) -> tuple[str | None, str]:
    """(reasoning, answer) of a text that starts with a think block, e.g. `<think>...
    </think>answer`; (None, text) when it has none. A text with the closing tag and no
    opening one counts too: chat templates of reasoning models (DeepSeek-R1, QwQ) put the
    opening tag in the prompt. A block never closed (cut at max_new_tokens) is all
    reasoning, and the answer is empty."""
    opening, closing = think_tags
    body = text.lstrip()
    if body.startswith(opening):
        body = body[len(opening) :]
    elif closing not in body:
        return None, text
    reasoning, _, answer = body.partition(closing)
    return reasoning.strip(), answer.strip()


def with_reasoning(reasoning: str | None, answer: str, think_tags: tuple[str, str]) -> str:
    """The answer with its reasoning put back in front, in think tags (what a student
    trained on reasoning reads); the answer alone when there is none."""
    if not reasoning:
        return answer
    opening, closing = think_tags
    return f"{opening}\n{reasoning}\n{closing}\n\n{answer}"


class Teacher(ABC):
    """A generation backend. Subclasses implement `generate`; `load`/`unload` are optional."""

    #: importable modules the backend needs, and the extra that installs them
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    #: `options` keys that change how, not what, the backend generates (fingerprints skip them)
    runtime_options: ClassVar[tuple[str, ...]] = ()
    #: it answers prompts; False: its answers come only from `calibration.source` (it needs
    #: one), so calibration does not ask it and routing never picks it
    can_generate: ClassVar[bool] = True
    #: the teacher's `model` must be set
    model_required: ClassVar[bool] = True
    #: it loads `model`'s weights in this process: `persyn validate` checks that the model
    #: exists, and a Ray replica of it gets `executor.num_gpus`
    loads_model: ClassVar[bool] = False
    #: it can generate alongside other teachers (its requests go to another machine, see
    #: `server`); False: it computes here, sharing this machine's device or CPU, so such
    #: teachers take turns. A teacher's `parallel` setting overrides it.
    parallel: ClassVar[bool] = False

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        #: a file in the run directory where the backend may keep what it needs to pick up
        #: a job a killed run left (the Batch API's batch id); set before `load`. None:
        #: nowhere (Ray replicas).
        self.resume_file: Path | None = None

    @property
    def batch_size(self) -> int:
        """Prompts per `generate` call: each call's results are saved before the next."""
        return self.cfg.batch_size

    def load(self) -> None:  # noqa: B027 - optional hook
        """Acquire expensive resources (weights, clients)."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release them."""

    @classmethod
    def server(cls, cfg: TeacherConfig) -> str:
        """For a `parallel` backend: what serves the teacher. Teachers of one server take
        turns, since they share its capacity; by default each teacher is its own."""
        return cfg.name

    @classmethod
    def code_digest(cls, cfg: TeacherConfig) -> str | None:
        """A hash of the code that computes the answers when that code is the user's (a
        `scripted` teacher's function); part of the teacher's fingerprint."""
        return None

    def chat(self, prompt: Prompt) -> list[dict[str, str]]:
        """The messages sent to the model: the teacher's system prompt, then the prompt's."""
        messages = [
            m for m in prompt.messages if m["role"] != "system" or not self.cfg.system_prompt
        ]
        if self.cfg.system_prompt:
            messages = [{"role": "system", "content": self.cfg.system_prompt}, *messages]
        return messages

    @abstractmethod
    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        """One `Generation` per prompt, in order; a failed prompt gets `error`, not an exception."""

    def stream(self, prompts: list[Prompt]) -> Iterator[Generation]:
        """One `Generation` per prompt as each finishes, in any order: what the executors
        consume. By default `generate` over `batch_size` prompts at a time."""
        for start in range(0, len(prompts), self.batch_size):
            yield from self.generate(prompts[start : start + self.batch_size])


BACKENDS: Registry[Teacher] = Registry(
    "persyn.teachers",
    "backend",
    Teacher,
    {
        "hf": "persyn.teachers.hf:HFTeacher",
        "scripted": "persyn.teachers.scripted:ScriptedTeacher",
        "openai": "persyn.teachers.openai:OpenAITeacher",
        "vllm": "persyn.teachers.vllm:VLLMTeacher",
        "imported": "persyn.teachers.imported:ImportedTeacher",
    },
)


def backend_class(name: str) -> type[Teacher]:
    """The backend registered as `name`, once its optional dependencies are installed."""
    cls = BACKENDS.load(name)
    missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
    if missing:
        install = f"'persyn[{cls.extra}]'" if cls.extra else " ".join(missing)
        raise ConfigError(f"backend {name!r} needs {', '.join(missing)}: pip install {install}")
    return cls


def can_generate(cfg: TeacherConfig) -> bool:
    """Whether the teacher answers prompts (its backend's `can_generate`)."""
    return BACKENDS.load(cfg.backend).can_generate


def checked_backend(cfg: TeacherConfig, where: str) -> type[Teacher]:
    """`cfg`'s backend class after the checks that need it (a registered name, its
    dependencies installed, `model` set where it needs one); errors name `where`."""
    BACKENDS.check(cfg.backend, f"{where}.backend")
    cls = backend_class(cfg.backend)
    if cls.model_required and not cfg.model:
        raise ConfigError(f"{where}: teacher {cfg.name!r}: `model` is required")
    return cls


def lane(cfg: TeacherConfig) -> str | None:
    """The lane the teacher generates in, alongside other lanes: None for the lane of the
    teachers that compute on this machine (not `parallel`); else its backend's `server`,
    or the teacher's own lane where its `parallel: true` says so."""
    backend = BACKENDS.load(cfg.backend)
    if cfg.parallel is None:
        return backend.server(cfg) if backend.parallel else None
    return cfg.name if cfg.parallel else None


def make_teacher(cfg: TeacherConfig) -> Teacher:
    return backend_class(cfg.backend)(cfg)

"""Programmatic teachers: a Python function answers each prompt.

`model` is a built-in name (`persyn.plugins.SCRIPTED_TEACHERS`) or `module:function` of
the user's own code (named in the config by its author; model output is never executed).
The function is called once per prompt as `fn(prompt)` with a `persyn.teachers.base.Prompt`
(`id`, `messages`, `kind`, `reference`, `meta`, and `text`: the messages as plain text)
and returns the answer as a `str` (nothing richer: token counts are its word count).
Anything else it returns, an exception it raises and a call that outlasts
`options.timeout_s` become error rows of that prompt; the error budget (`max_error_rate`)
decides whether the stage goes on, and its one-line message names the teacher, the first
failed prompt and why.

`options` keys (all optional):

    timeout_s  seconds one call may take (default 60; null: no limit). Calls run in a
               worker thread so that they can be waited for; a Python thread cannot be
               stopped, so a call past the limit keeps running in the background until it
               returns, and the next call gets a new thread

The teacher's fingerprint includes the function's code (`persyn.plugins.code_digest`):
editing it regenerates the teacher's answers on the next run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from persyn.config import Section, TeacherConfig, backend_options
from persyn.plugins import SCRIPTED_TEACHERS, code_digest, resolve
from persyn.teachers.base import Generation, Prompt, Teacher


class ScriptedOptions(Section):
    timeout_s: float | None = Field(
        60.0, gt=0, description="Seconds one call may take; null: no limit."
    )


class _CallThread:
    """A daemon thread that makes the function's calls one at a time, so that the caller
    can wait for each with a time limit. Daemon: a call still running when persyn exits
    does not keep the process alive."""

    def __init__(self, fn: Callable[[Prompt], Any]) -> None:
        self.fn = fn
        self.calls: queue.SimpleQueue[Prompt | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="persyn-scripted").start()

    def _serve(self) -> None:
        while (prompt := self.calls.get()) is not None:
            try:
                self.results.put((self.fn(prompt), None))
            except BaseException as err:  # handed to the caller, who decides
                self.results.put((None, err))

    def call(self, prompt: Prompt, timeout_s: float | None) -> Any:
        """The function's return value; raises what it raised, or `queue.Empty` when it
        did not return within `timeout_s`."""
        self.calls.put(prompt)
        value, err = self.results.get(timeout=timeout_s)
        if err is not None:
            raise err
        return value

    def stop(self) -> None:
        self.calls.put(None)


class ScriptedTeacher(Teacher):
    # How long a call may take does not change what the function answers.
    runtime_options: ClassVar[tuple[str, ...]] = ("timeout_s",)

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        self.options = backend_options(ScriptedOptions, cfg)
        # Resolved on construction, so `persyn validate` catches a wrong name up front.
        self.fn = resolve(cfg.model, f"teacher {cfg.name!r}: scripted model", SCRIPTED_TEACHERS)
        self._thread: _CallThread | None = None

    @classmethod
    def code_digest(cls, cfg: TeacherConfig) -> str | None:
        return code_digest(cfg.model, f"teacher {cfg.name!r}: scripted model", SCRIPTED_TEACHERS)

    def unload(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        return [self._answer(p) for p in prompts]

    def _answer(self, prompt: Prompt) -> Generation:
        if self._thread is None:  # loading costs nothing: callers may skip load()
            self._thread = _CallThread(self.fn)
        # No teacher or prompt id in the text: the row has both, and equal reasons are
        # counted together in the summary (`failed_reasons`).
        try:
            text = self._thread.call(prompt, self.options.timeout_s)
        except queue.Empty:
            self._thread = _CallThread(self.fn)  # the old one is still inside the call
            return Generation(
                prompt.id,
                error=f"{self.cfg.model} did not return within options.timeout_s="
                f"{self.options.timeout_s:g} s (the call goes on in the background: a Python "
                "thread cannot be stopped)",
            )
        except Exception as err:  # a user function's bug becomes an error row
            return Generation(prompt.id, error=f"{type(err).__name__}: {err}")
        if not isinstance(text, str):
            return Generation(
                prompt.id,
                error=f"{self.cfg.model} returned {type(text).__name__}, not the answer as a str",
            )
        # A function's answer is whole: nothing cuts it at max_new_tokens.
        return Generation(prompt.id, text, 0, len(text.split()), finish_reason="stop")

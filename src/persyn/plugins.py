"""Functions a config names: the user's own `module:function`, or a built-in name.

A built-in name is only an alias for a `module:function` string, so the demo's prompt sets
and solvers load through the same path as user code, and core modules name the demo
without importing it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import marshal
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from persyn.config import ConfigError
from persyn.config.aliases import PROMPT_SETS, SCRIPTED_TEACHERS, locate

# The aliases live in the config (it checks names without importing this module).
__all__ = ["PROMPT_SETS", "SCRIPTED_TEACHERS", "locate", "resolve"]


def resolve(spec: str, what: str, builtins: Mapping[str, str]) -> Callable[..., Any]:
    """The function `spec` names; `what` (e.g. the config key) starts each one-line error."""
    module, function = locate(spec, what, builtins)
    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{what} {spec!r}: {err} (is the module on PYTHONPATH?)") from None
    if not callable(fn):
        raise ConfigError(f"{what} {spec!r}: {module}.{function} is not a function")
    return fn


# Per module name: the module object and the digest of its file as this process first read
# it. The code that runs is the code imported then, even when the file is edited later (a
# new process, or a re-import, reads it again), so the digest must describe that code.
_CODE_DIGESTS: dict[str, tuple[ModuleType, str]] = {}


def code_digest(spec: str, what: str, builtins: Mapping[str, str]) -> str:
    """sha256 of the code `spec`'s function runs: the source file of the module defining
    it (helpers in the same file included; code it imports from other modules is not).
    Part of a scripted teacher's fingerprint, so editing the function regenerates its
    answers."""
    fn = resolve(spec, what, builtins)
    module = inspect.getmodule(fn) or importlib.import_module(locate(spec, what, builtins)[0])
    cached = _CODE_DIGESTS.get(module.__name__)
    if cached is None or cached[0] is not module:
        cached = (module, _module_digest(module, fn, f"{what} {spec!r}"))
        _CODE_DIGESTS[module.__name__] = cached
    return cached[1]


def _module_digest(module: ModuleType, fn: Callable[..., Any], what: str) -> str:
    path = getattr(module, "__file__", None)
    if path and Path(path).is_file():
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    code = getattr(fn, "__code__", None)  # defined interactively (a notebook's __main__)
    if code is None:
        raise ConfigError(
            f"{what}: cannot tell which code it runs (no module file, not a plain "
            "function); define it in a module file"
        )
    return hashlib.sha256(marshal.dumps(code)).hexdigest()

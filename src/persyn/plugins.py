"""Functions a config names: the user's own `module:function`, or a built-in name.

A built-in name is only an alias for a `module:function` string, so the demo's prompt sets
and solvers load through the same path as user code, and core modules name the demo
without importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
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

"""One registry per pluggable family (teacher backends, quality and learnability signals,
routers, routing policies, executors), and the only list of what each family holds.

A registry maps a name (what the config writes) to a class. Built-ins are given as classes
or as `module:attr` strings imported on first use, so a backend's optional dependency is
needed only by the runs that use it. Other packages add entries through Python entry points
(the way pytest finds `pytest11` plug-ins), one group per family:

    [project.entry-points."persyn.teachers"]
    my-backend = "my_package.backend:MyTeacher"

Entry points are read when a name is not built in, or when the names are listed, and loaded
only when used. The config itself holds plain strings; `persyn.config_checks` checks them
against the registries at `persyn validate` and `persyn run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from persyn.config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to subclasses of `base`: `builtins`, then the entry points of `group`."""

    def __init__(
        self, group: str, what: str, base: type[T], builtins: Mapping[str, type[T] | str]
    ) -> None:
        self.group = group  # the entry-point group plug-ins register under
        self.what = what  # what an entry is, for messages ("backend", "router")
        self.base = base
        self.builtins: dict[str, type[T] | str] = dict(builtins)

    def plugins(self) -> dict[str, str]:
        """The group's entry points, name -> `module:attr`, none of them imported."""
        found: dict[str, str] = {}
        for point in entry_points(group=self.group):
            if point.name in self.builtins:
                raise ConfigError(
                    f"entry point {point.name} = {point.value!r} (group {self.group}) takes "
                    f"the name of a built-in {self.what}; rename it"
                )
            found[point.name] = point.value
        return found

    def names(self) -> list[str]:
        return sorted({*self.builtins, *self.plugins()})

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.builtins or name in self.plugins()

    def check(self, name: str, where: str) -> None:
        """One line naming `where` (a config key) when `name` is not registered."""
        if name not in self:
            raise ConfigError(
                f"{where}: unknown {self.what} {name!r}; choose one of {self.names()}"
            )

    def load(self, name: str) -> type[T]:
        """The class registered as `name`, imported now if it was not."""
        entry = self.builtins.get(name) or self.plugins().get(name)
        if entry is None:
            raise ConfigError(f"unknown {self.what} {name!r}; choose one of {self.names()}")
        cls = entry if isinstance(entry, type) else self._import(name, entry)
        if not issubclass(cls, self.base):
            raise ConfigError(
                f"{self.what} {name!r}: {cls.__qualname__} is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        # Routers, policies and quality signals write their name into artifacts (a router
        # checkpoint, a score's label) and are found again by it.
        named = "name" in vars(self.base).get("__annotations__", {})
        if named and getattr(cls, "name", None) != name:
            raise ConfigError(
                f"{self.what} {name!r}: {cls.__qualname__} must set name = {name!r}, "
                "its registry key"
            )
        return cls

    def _import(self, name: str, target: str) -> type[T]:
        module, _, attr = target.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"{self.what} {name!r} ({target}) could not be imported: {err}"
            ) from None
        if not isinstance(found, type):
            raise ConfigError(f"{self.what} {name!r}: {target} is not a class")
        return found

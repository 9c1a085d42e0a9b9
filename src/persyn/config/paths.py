"""Paths in a config file resolve relative to the file's folder, not to wherever `persyn`
is started: `persyn run examples/x.yaml` and `cd examples && persyn run x.yaml` read the
same files and write the same run directory.

Applied to the YAML as read, before `--set` overrides (a path given on the command line is
relative to the current directory, as any command-line path). A value that names no local
path is left as it is: a hub id (`owner/name`), `pkg:NAME`, a `module:function`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Where the run writes (or a run directory it copies): always a local path.
OUTPUT_PATHS = (
    "run_dir",
    "student_training.output_dir",
    "experiment.output_dir",
    "experiment.base_run",
)
# A local file or folder, or a hub dataset id.
DATA_PATHS = (
    "prompts.source",
    "calibration.source.path",
    "evaluation.prompts.source",
    "tune.validation.source",
    "student_training.dataset",
)
# A local model folder, or a hub id (or `pkg:`, or a teacher's server-side model name).
MODEL_PATHS = (
    "student.model",
    "teachers.*.model",
    "router.backbone",
    "calibration.embedding_model",
)

# What a hub id looks like (`name` or `owner/name`); the data readers use the same shape.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_DATA_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}


def resolve_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`data` (a config as read from YAML) with its relative paths made absolute against
    `folder`, the config file's folder; changed in place and returned."""
    folder = folder.absolute()
    rules: list[tuple[tuple[str, ...], Callable[[str, Path], bool]]] = [
        (OUTPUT_PATHS, lambda _v, _p: True),
        (("store",), lambda v, _p: v.strip().lower() != "none"),  # `none`: no store
        (DATA_PATHS, _is_local_data),
        (MODEL_PATHS, _is_local_model),
    ]
    for fields, is_path in rules:
        for dotted in fields:
            for node, key in _slots(data, dotted.split(".")):
                value = node[key]
                if not isinstance(value, str) or not _relative(value):
                    continue
                candidate = folder / value
                if is_path(value, candidate):
                    node[key] = os.path.normpath(candidate)
    return data


def _relative(value: str) -> bool:
    # `pkg:NAME`, `module:function`, URLs: not paths. `~` is the user's home, not relative.
    return bool(value) and ":" not in value and not value.startswith(("/", "~"))


def _is_local_data(value: str, candidate: Path) -> bool:
    hub_shaped = _HUB_ID.fullmatch(value) and Path(value).suffix.lower() not in _DATA_SUFFIXES
    return candidate.exists() or not hub_shaped


def _is_local_model(value: str, candidate: Path) -> bool:
    return candidate.exists() or value.startswith(("./", "../")) or value in (".", "..")


def _slots(node: Any, parts: list[str]) -> Iterator[tuple[dict[str, Any], str]]:
    """(mapping, key) of every value at the dotted path (`*`: each item of a list)."""
    head, *rest = parts
    if head == "*":
        children = node if isinstance(node, list) else []
    elif isinstance(node, dict) and head in node:
        if not rest:
            yield node, head
            return
        children = [node[head]]
    else:
        return
    for child in children:
        if rest:
            yield from _slots(child, rest)

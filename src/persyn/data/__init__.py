"""Prompts in: `rows` reads a source's rows (files, `datasets` folders, the hub) and
hashes it; `prompts` turns rows into `Prompt`s with one-line errors."""

from persyn.data.prompts import builtin_prompts, load_prompts
from persyn.data.rows import DataError, first_line, jsonl_rows, path_digest, source_digest

__all__ = [
    "DataError",
    "builtin_prompts",
    "first_line",
    "jsonl_rows",
    "load_prompts",
    "path_digest",
    "source_digest",
]

"""The report's HTML building blocks: escaping (every string that reaches the page is
untrusted), excerpts, tables and numbers."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

EXCERPT_CHARS = 400  # longer prompts and responses are cut in the tables


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + " [...]"


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def fmt_num(x: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else pattern.format(x)

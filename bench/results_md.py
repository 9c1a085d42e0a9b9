"""Writing one benchmark's section of bench/RESULTS.md, leaving the others alone."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def replace_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace the `## heading` section (up to the next `## ` heading), or append it."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"## {heading}\n\n{body.strip()}\n\n"
    if pattern.search(old):
        new = pattern.sub(lambda _: section, old)
    else:
        new = old.rstrip() + "\n\n" + section
    path.write_text(new)

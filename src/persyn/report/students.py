"""Students side by side (a run with `students:`): how differently their routers send the
same prompts.

One router per student is the method's point (learnability depends on the student), so
the comparison asks whether the routers really differ: each student's share of routed
prompts per teacher, and per pair of students the share of the prompts both routed that
their routers sent to the same teacher (1 on the diagonal; a pair near 1 would have been
served as well by one router).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from persyn.artifacts import RunArtifacts, StudentArtifacts, student_folders
from persyn.report.headline import print_summary
from persyn.report.html_parts import esc, html_table


def compare_students(stores: dict[str, RunArtifacts]) -> dict[str, Any]:
    """Per student the share of routed prompts per teacher, and the pairwise agreement of
    their routers (rounded to 4 places), on the prompts every student routed."""
    routed = {n: {r["prompt_id"]: r["teacher"] for r in s.routes()} for n, s in stores.items()}
    teachers = next(iter(stores.values())).reward_teachers() if stores else []
    common = set.intersection(*(set(r) for r in routed.values())) if routed else set()

    def share(hits: int, empty: float) -> float:
        # no prompt routed by all: no teacher's share, and nothing two routers disagree on
        return round(hits / len(common), 4) if common else empty

    shares = {
        name: {t: share(sum(routes[p] == t for p in common), 0.0) for t in teachers}
        for name, routes in routed.items()
    }
    agreement = {
        a: {b: share(sum(ra[p] == rb[p] for p in common), 1.0) for b, rb in routed.items()}
        for a, ra in routed.items()
    }
    return {
        "students": list(routed),
        "teachers": teachers,
        "routed_prompts": len(common),
        "shares": shares,
        "agreement": agreement,
    }


def students_summary(top: RunArtifacts) -> dict[str, Any]:
    """The top `summary.json` of a run with several students: each finished student's
    summary, and their comparison."""
    stores = dict(student_folders(top))
    return {
        "students": {name: store.summary() for name, store in stores.items()},
        "comparison": compare_students(stores),
    }


def students_html(comparison: dict[str, Any], image: str, links: dict[str, str]) -> str:
    """The comparison's section of the top page: its plot (`image`, an <img> tag), the
    shares and agreement tables, and a link to each student's report."""
    names, teachers = comparison["students"], comparison["teachers"]
    shares = html_table(
        ["teacher", *names],
        [[t, *(f"{comparison['shares'][n][t]:.1%}" for n in names)] for t in teachers],
    )
    agreement = html_table(
        ["", *names], [[a, *(f"{comparison['agreement'][a][b]:.1%}" for b in names)] for a in names]
    )
    reports = "".join(f'<li><a href="{esc(href)}">{esc(n)}</a></li>' for n, href in links.items())
    return f"""<h2>Students side by side</h2>
<p>{comparison["routed_prompts"]} prompts every student's router routed. Agreement: the share
of them two students' routers send to the same teacher.</p>
{image}<h3>Share of routed prompts per teacher</h3>{shares}
<h3>Agreement between routers</h3>{agreement}
<h3>Each student's report</h3><ul>{reports}</ul>"""


def print_students(summary: dict[str, Any], run_dir: str | Path, console: Console) -> None:
    """Each student's headline, then their routers side by side."""
    top = RunArtifacts(run_dir)
    for name, one in summary["students"].items():
        console.rule(f"student {name}")
        print_summary(one, str(StudentArtifacts(top, name).root), console)
    comparison = summary["comparison"]
    names, teachers = comparison["students"], comparison["teachers"]
    table = Table(
        title=f"routers side by side ({comparison['routed_prompts']} routed prompts): share "
        "per teacher, and agreement (same teacher chosen) with each student",
        title_justify="left",
    )
    for column in ["student", *teachers, *(f"= {n}" for n in names)]:
        table.add_column(column, justify="left" if column == "student" else "right")
    for a in names:
        shares = [f"{comparison['shares'][a][t]:.0%}" for t in teachers]
        table.add_row(a, *shares, *(f"{comparison['agreement'][a][b]:.0%}" for b in names))
    console.print(table)

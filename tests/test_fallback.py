"""A routed answer that fails falls back to the router's next-best teacher: the dataset
row says so (`provenance.fallback_from`), `failed.jsonl` gets only prompts whose whole
chain failed, `routing.fallback_tries: 0` keeps the failure, and a killed run resumes
without asking again for anything already answered."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from persyn.answer_store import answer_store
from persyn.config import parse_config
from persyn.demo.solvers import solver_concise, solver_quick, solver_verbose
from persyn.pipeline import Run, StageError, run_pipeline, run_stage
from persyn.report.headline import print_summary
from persyn.report.html import build_report
from persyn.stages.fallback import chain_order
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt

# Which prompts each teacher fails on (set by a test after routing), and every call made.
FAILING: dict[str, set[str]] = {}
CALLS: Counter[tuple[str, str]] = Counter()
TEACHERS = ("a", "b", "c", "d")


def _teacher(name: str, solve: Any) -> Any:
    def answer(prompt: Prompt) -> str:
        CALLS[(name, prompt.id)] += 1
        if prompt.id in FAILING.get(name, ()):
            raise RuntimeError(f"teacher {name} is down")
        return solve(prompt)

    return answer


answer_a = _teacher("a", solver_verbose)
answer_b = _teacher("b", solver_concise)
answer_c = _teacher("c", solver_quick)
answer_d = _teacher("d", lambda p: f"In short: {solver_concise(p)}")


def fallback_config(
    tiny_lm_dir: Path, run_dir: Path, max_error_rate: float = 1.0, **routing: Any
) -> dict[str, Any]:
    """Four function teachers; `max_error_rate` 1 by default: the tests fail many of a
    handful of prompts on purpose."""
    lm = {"model": str(tiny_lm_dir), "dtype": "float32"}
    return {
        "name": "fallback",
        "run_dir": str(run_dir),
        "student": {**lm, "max_length": 256},
        "teachers": [
            {"name": t, "backend": "scripted", "model": f"test_fallback:answer_{t}"}
            for t in TEACHERS
        ],
        "prompts": {"builtin": "arithmetic", "num_prompts": 24, "seed": 3},
        "calibration": {"size": 12, "seed": 0},
        "rewards": {"quality": [{"kind": "math"}]},
        "router": {"epochs": 5, "val_fraction": 0.25},
        "routing": routing,
        "max_error_rate": max_error_rate,
    }


def test_chain_order(tmp_path: Path) -> None:
    """The routed teacher, then the others by the router's score (ties in pool order), at
    most `fallback_tries` of them, never one that cannot generate (imported only)."""
    data = fallback_config(tmp_path, tmp_path / "run", fallback_tries=2)
    data["teachers"].append({"name": "data-only", "backend": "imported"})
    route = {
        "teacher": "b",
        "router_scores": {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.3, "data-only": 9.0},
    }
    assert chain_order(parse_config(data), route) == ["b", "c", "d"]
    data["routing"] = {"fallback_tries": 5}
    assert chain_order(parse_config(data), route) == ["b", "c", "d", "a"]
    data["routing"] = {"fallback_tries": 0}
    assert chain_order(parse_config(data), {"teacher": "b"}) == ["b"]


@pytest.fixture(scope="module")
def routed(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory routed with every teacher answering (the calibration is clean)."""
    run_dir = tmp_path_factory.mktemp("fallback") / "routed"
    FAILING.clear()
    run_stage(Run.open(parse_config(fallback_config(tiny_lm_dir, run_dir)), None), "route")
    return run_dir


@pytest.fixture
def run_dir(routed: Path, tmp_path: Path) -> Path:
    """A copy of the routed run; the teachers answer everything and no call is counted."""
    FAILING.clear()
    CALLS.clear()
    return Path(shutil.copytree(routed, tmp_path / "run"))


def ranking(run_dir: Path) -> dict[str, list[str]]:
    """Per routed prompt: the routed teacher, then the others by the router's score."""
    scores = {r["prompt_id"]: r["scores"] for r in read_jsonl(run_dir / "router/scores.jsonl")}
    out = {}
    for route in read_jsonl(run_dir / "routes.jsonl"):
        pid, first = route["prompt_id"], route["teacher"]
        by_score = dict(zip(TEACHERS, scores[pid], strict=True))
        others = sorted((t for t in TEACHERS if t != first), key=lambda t: -by_score[t])
        out[pid] = [first, *others]
    return out


def export(tiny_lm_dir: Path, run_dir: Path, **routing: Any) -> dict[str, Any]:
    return run_pipeline(parse_config(fallback_config(tiny_lm_dir, run_dir, **routing)))


def test_failed_answers_go_to_the_next_best_teacher(tiny_lm_dir: Path, run_dir: Path) -> None:
    chains = ranking(run_dir)
    once, twice = sorted(chains)[:3], sorted(chains)[3]
    for pid in once:  # the routed teacher fails
        FAILING.setdefault(chains[pid][0], set()).add(pid)
    for t in chains[twice][:2]:  # the routed teacher and the next best fail
        FAILING.setdefault(t, set()).add(twice)
    summary = export(tiny_lm_dir, run_dir)

    rows = {r["id"]: r for r in read_jsonl(run_dir / "dataset.jsonl")}
    assert read_jsonl(run_dir / "failed.jsonl") == []
    for pid in once:
        assert rows[pid]["teacher"] == chains[pid][1]
        assert rows[pid]["selected_by"] == "router"
        assert rows[pid]["provenance"]["fallback_from"] == [chains[pid][0]]
    assert rows[twice]["teacher"] == chains[twice][2]
    assert rows[twice]["provenance"]["fallback_from"] == chains[twice][:2]
    for pid in set(chains) - {*once, twice}:  # answered by the routed teacher
        assert rows[pid]["teacher"] == chains[pid][0]
        assert rows[pid]["provenance"]["fallback_from"] == []
    # no teacher was asked beyond the first good answer, and each at most once
    for pid in chains:
        tried = [*rows[pid]["provenance"]["fallback_from"], rows[pid]["teacher"]]
        assert [t for t in TEACHERS if CALLS[(t, pid)]] == sorted(tried)
        assert all(CALLS[(t, pid)] == 1 for t in tried)
    assert summary["fallback_rows"] == 4 and summary["failed_rows"] == 0
    console = Console(record=True, width=300)
    print_summary(summary, str(run_dir), console)
    assert "failed 0, 4 answered by a fallback teacher" in console.export_text()
    assert '<div class="muted">fallback rows</div>' in build_report(run_dir, None).read_text()
    # calibration, one answer per routed prompt, and the fallback answers (paid for too)
    assert summary["generations"] == 12 * len(TEACHERS) + len(chains) + 5
    # the ledger counts the same requests by stage: the failed ones too (paid for)
    stages = summary["spend"]["by_stage"]
    assert stages["calibration"]["requests"] == 12 * len(TEACHERS)
    assert (stages["routed"]["requests"], stages["fallback"]["requests"]) == (len(chains), 5)
    # a rerun asks nothing again: every prompt has its answer
    calls = CALLS.copy()
    export(tiny_lm_dir, run_dir)
    assert calls == CALLS


def test_whole_chain_failed_goes_to_failed_jsonl(tiny_lm_dir: Path, run_dir: Path) -> None:
    chains = ranking(run_dir)
    pid = sorted(chains)[0]
    for t in chains[pid][:2]:
        FAILING.setdefault(t, set()).add(pid)
    summary = export(tiny_lm_dir, run_dir, fallback_tries=1)

    failed = read_jsonl(run_dir / "failed.jsonl")
    assert [(f["prompt_id"], f["teacher"], f["tried"]) for f in failed] == [
        (pid, chains[pid][0], chains[pid][:2])
    ]
    assert f"teacher {chains[pid][0]} is down" in failed[0]["error"]  # the routed one's
    assert pid not in {r["id"] for r in read_jsonl(run_dir / "dataset.jsonl")}
    assert CALLS[(chains[pid][2], pid)] == 0  # one try only: the third teacher is not asked
    assert summary["failed_rows"] == 1
    # A rerun tries the whole chain again, from the routed teacher.
    FAILING.clear()
    export(tiny_lm_dir, run_dir, fallback_tries=1)
    row = next(r for r in read_jsonl(run_dir / "dataset.jsonl") if r["id"] == pid)
    assert row["teacher"] == chains[pid][0] and row["provenance"]["fallback_from"] == []
    assert read_jsonl(run_dir / "failed.jsonl") == []


def test_no_fallback_keeps_the_failure(tiny_lm_dir: Path, run_dir: Path) -> None:
    chains = ranking(run_dir)
    pid = sorted(chains)[0]
    FAILING[chains[pid][0]] = {pid}
    summary = export(tiny_lm_dir, run_dir, fallback_tries=0)

    failed = read_jsonl(run_dir / "failed.jsonl")
    assert [(f["prompt_id"], f["teacher"]) for f in failed] == [(pid, chains[pid][0])]
    assert [t for t in TEACHERS if CALLS[(t, pid)]] == [chains[pid][0]]
    assert summary["fallback_rows"] == 0


def test_error_budget_counts_prompts_left_without_an_answer(
    tiny_lm_dir: Path, run_dir: Path
) -> None:
    """One routed answer of about a dozen failing is above `max_error_rate` 0.05: the
    stage stops without fallback, and finishes when the next-best teacher answers."""
    chains = ranking(run_dir)
    pid = sorted(chains)[0]
    FAILING[chains[pid][0]] = {pid}
    no_fallback = fallback_config(tiny_lm_dir, run_dir, 0.05, fallback_tries=0)
    with pytest.raises(StageError, match=r"^generate: teacher '\w+': 1/\d+ rows failed"):
        run_pipeline(parse_config(no_fallback))
    summary = run_pipeline(parse_config(fallback_config(tiny_lm_dir, run_dir, 0.05)))
    assert (summary["failed_rows"], summary["fallback_rows"]) == (0, 1)
    assert CALLS[(chains[pid][0], pid)] == 1  # not asked again: it already failed


def test_killed_fallback_resumes_without_asking_again(tiny_lm_dir: Path, run_dir: Path) -> None:
    """Killed after the routed teachers answered and before the fallback teachers did:
    the rerun asks only the fallback teachers, never a teacher that answered (or failed)."""
    chains = ranking(run_dir)
    down = sorted(chains)[:3]
    for pid in down:
        FAILING.setdefault(chains[pid][0], set()).add(pid)
    export(tiny_lm_dir, run_dir)
    dataset = (run_dir / "dataset.jsonl").read_text()
    # The kill: the fallback answers never reached their logs, the stage never finished.
    for pid in down:
        log = run_dir / "generations" / f"{chains[pid][1]}.jsonl"
        kept = [
            line for line in log.read_text().splitlines() if json.loads(line)["prompt_id"] != pid
        ]
        log.write_text("".join(line + "\n" for line in kept))
        # nor the answer store, which is written after the log
        store = answer_store(None)
        assert store is not None
        store.prune(teacher=chains[pid][1])
    for stage in ("generate", "export"):
        (run_dir / "stages" / f"{stage}.json").unlink()
    CALLS.clear()
    export(tiny_lm_dir, run_dir)
    assert Counter({(chains[pid][1], pid): 1 for pid in down}) == CALLS
    assert (run_dir / "dataset.jsonl").read_text() == dataset

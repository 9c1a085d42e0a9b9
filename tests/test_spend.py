"""The spend ledger and the spend cap: tokens and money per teacher and judge per stage,
read from the row logs (checked against the function teachers' own answers), and
`max_cost`, which stops a stage before the money could pass it, loses nothing, and lets a
rerun with a higher cap finish by asking only what is left."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from persyn.cli import app
from persyn.config import parse_config
from persyn.demo.solvers import solver_concise
from persyn.pipeline import Run, StageError, run_pipeline
from persyn.report.data import load_artifacts
from persyn.report.headline import print_summary
from persyn.report.html import spend_html
from persyn.spend import spent, worst_case_cost
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt

CALLS: Counter[tuple[str, str]] = Counter()
PRICES = {"a": 2.0, "b": 1.0, "c": 0.5}  # per 1K completion tokens
JUDGE_PRICE = 3.0
# Answers of 6, 4 and 5 words (a function teacher's words are its tokens), near the
# bound of 8: the cap's worst case is close to what an answer costs.
MAX_NEW_TOKENS = 8
ANSWERS = {"a": "I am sure it is {}", "b": "The answer: {} .", "c": "My guess is {} ."}


def _solve(name: str, prompt: Prompt) -> str:
    number = solver_concise(prompt).rsplit(" ", 1)[1].rstrip(".")
    return ANSWERS[name].format(number)


def _teacher(name: str) -> Any:
    def answer(prompt: Prompt) -> str:
        CALLS[(name, prompt.id)] += 1
        return _solve(name, prompt)

    return answer


answer_a, answer_b, answer_c = (_teacher(t) for t in PRICES)


def judge(prompt: Prompt) -> str:
    return "Score: 7"  # two words: two completion tokens per judged answer


def spend_config(tiny_lm_dir: Path, run_dir: Path, **extra: Any) -> dict[str, Any]:
    lm = {"model": str(tiny_lm_dir), "dtype": "float32"}
    judge_teacher = {
        "backend": "scripted",
        "model": "test_spend:judge",
        "cost_per_1k_output_tokens": JUDGE_PRICE,
    }
    return {
        "name": "spend",
        "run_dir": str(run_dir),
        "student": {**lm, "max_length": 256},
        "teachers": [
            {
                "name": t,
                "backend": "scripted",
                "model": f"test_spend:answer_{t}",
                "generation": {"max_new_tokens": MAX_NEW_TOKENS},
                "cost_per_1k_output_tokens": price,
            }
            for t, price in PRICES.items()
        ],
        "prompts": {"builtin": "arithmetic", "num_prompts": 24, "seed": 3},
        "calibration": {"size": 12, "seed": 0},
        "rewards": {
            "quality": [{"kind": "math"}, {"kind": "judge", "options": {"teacher": judge_teacher}}]
        },
        "router": {"epochs": 5, "val_fraction": 0.25},
        **extra,
    }


def words(teacher: str, prompt: Prompt) -> int:
    return len(_solve(teacher, prompt).split())


@pytest.fixture(scope="module")
def finished(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("spend") / "run"
    run_pipeline(parse_config(spend_config(tiny_lm_dir, run_dir)))
    return run_dir


def test_ledger_sums_tokens_and_money_per_teacher_and_stage(
    tiny_lm_dir: Path, finished: Path
) -> None:
    run = Run.open(parse_config(spend_config(tiny_lm_dir, finished)))
    by_id = run.prompts_by_id()
    calibration = run.store.split().calibration
    routes = {r["prompt_id"]: r["teacher"] for r in read_jsonl(finished / "routes.jsonl")}
    expected: dict[tuple[str, str], tuple[int, int]] = {}  # (who, stage) -> (requests, tokens)
    for t in PRICES:
        expected[t, "calibration"] = (12, sum(words(t, by_id[pid]) for pid in calibration))
        mine = [pid for pid, chosen in routes.items() if chosen == t]
        if mine:
            expected[t, "routed"] = (len(mine), sum(words(t, by_id[pid]) for pid in mine))
    expected["judge", "judging"] = (12 * 3, 12 * 3 * 2)
    summary = run.store.summary()
    spend = summary["spend"]
    got = {(x["who"], x["stage"]): (x["requests"], x["completion_tokens"]) for x in spend["lines"]}
    assert got == expected
    price = {**PRICES, "judge": JUDGE_PRICE}
    for line in spend["lines"]:
        assert line["prompt_tokens"] == 0
        assert line["cost"] == pytest.approx(line["completion_tokens"] * price[line["who"]] / 1000)
    assert {x["role"] for x in spend["lines"] if x["who"] == "judge"} == {"judge"}
    total = sum(tokens * price[who] / 1000 for (who, _), (_, tokens) in expected.items())
    assert spend["total"]["cost"] == pytest.approx(total)
    assert spend["total"]["requests"] == 36 + 12 + 36
    assert spend["by_stage"]["judging"]["cost"] == pytest.approx(72 * JUDGE_PRICE / 1000)
    assert spend["by_stage"]["fallback"]["requests"] == 0
    assert spent(run.store, run.cfg) == pytest.approx(total)
    # the teachers' cost in the summary is the same money, without the judge
    assert summary["total_cost"] == pytest.approx(total - 72 * JUDGE_PRICE / 1000)
    card = (finished / "dataset" / "README.md").read_text()
    assert "## Spend" in card and f"Spent {total:.4f} on 84 requests" in card
    assert "| judge (judge) | judging | 36 | 0 | 72 |" in card
    console = Console(record=True, width=200)
    print_summary(summary, str(finished), console)
    assert f"spent {total:.4f} on 84 teacher and judge requests" in console.export_text()
    html = spend_html(load_artifacts(finished))
    assert f"Spent {total:.4f} on 84 requests" in html and "<td>judging</td>" in html


def test_max_cost_option_stops_a_stage_command(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "spend.yaml"
    config.write_text(yaml.safe_dump(spend_config(tiny_lm_dir, tmp_path / "run")))
    result = CliRunner().invoke(app, ["calibrate", str(config), "--max-cost", "0.001"])
    assert result.exit_code == 2
    assert "calibrate: stopped at the spend cap: spent 0.0000 of max_cost 0.001;" in " ".join(
        result.output.split()
    )


def test_cap_stops_before_it_is_passed_and_a_higher_cap_continues(
    tiny_lm_dir: Path, finished: Path, tmp_path: Path
) -> None:
    full = Run.open(parse_config(spend_config(tiny_lm_dir, finished))).store.summary()["spend"]
    calibration = full["by_stage"]["calibration"]["cost"]
    run_dir = tmp_path / "run"
    CALLS.clear()

    def attempt(cap: float | None) -> Run:
        run = Run.open(parse_config(spend_config(tiny_lm_dir, run_dir, max_cost=cap)))
        run_pipeline(run.cfg)
        return run

    # 1. a cap that calibration alone passes: it stops in `calibrate`
    cap = calibration / 2
    with pytest.raises(StageError, match=r"^calibrate: stopped at the spend cap: spent ") as err:
        attempt(cap)
    assert f"of max_cost {cap:g}; teacher " in str(err.value)
    assert "raise max_cost (--max-cost) and rerun to continue" in str(err.value)
    run = Run.open(parse_config(spend_config(tiny_lm_dir, run_dir)))
    assert 0 < spent(run.store, run.cfg) <= cap
    asked_first = sum(CALLS.values())
    # nothing lost: every call made is a saved row
    rows = sum(len(run.store.generation_log(t).rows) for t in PRICES)
    assert rows == asked_first

    # 2. room for calibration, judging and all but half the cheapest answer: it cannot
    # finish, and it stops in `generate` having asked what fitted
    cap = full["total"]["cost"] - 5 * PRICES["c"] / 1000 / 2
    with pytest.raises(StageError, match=r"^generate: stopped at the spend cap"):
        attempt(cap)
    assert spent(run.store, run.cfg) <= cap
    assert len(read_jsonl(run_dir / "routes.jsonl")) == 12
    calibration_ids = set(run.store.split().calibration)
    routed_rows = [
        pid
        for t in PRICES
        for (pid, _) in run.store.generation_log(t).rows
        if pid not in calibration_ids
    ]
    assert 0 < len(routed_rows) < 12

    # 3. no cap: the rest only; every answer was asked exactly once over the three runs
    attempt(None)
    assert set(CALLS.values()) == {1}
    assert sum(CALLS.values()) == 36 + 12
    assert Run.open(run.cfg).store.summary()["spend"]["total"]["cost"] == pytest.approx(
        full["total"]["cost"]
    )


def test_worst_case_bounds_prompt_bytes_and_max_new_tokens(tiny_lm_dir: Path) -> None:
    cfg = parse_config(spend_config(tiny_lm_dir, Path("unused")))
    update = {"system_prompt": "Be brief.", "cost_per_1k_input_tokens": 10.0}
    teacher = cfg.teacher("a").model_copy(update=update)
    prompt = Prompt("p", [{"role": "user", "content": "What is 2 + 2?"}])
    # 14 + 9 bytes, 8 template tokens per message and 64 per request, at 10.0; 8 tokens
    # at 2.0 (per 1K)
    bound = 23 + 2 * 8 + 64
    assert worst_case_cost(teacher, prompt) == pytest.approx((bound * 10 + 8 * 2) / 1000)

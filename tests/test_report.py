"""`persyn report`: plots and an HTML page from a real (tiny) run, rendered in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.cli import app
from persyn.config import parse_config
from persyn.demo.prompts import demo_mix
from persyn.pipeline import run_pipeline
from persyn.report.data import ReportError, load_artifacts
from persyn.report.html import build_report, coverage_banner, example_rows
from persyn.report.kinds import kind_figures
from persyn.report.plots import PLOTS, confusion_matrix
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"alert(1)\"> & say hi"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hostile_mix(num_prompts: int, seed: int) -> list[Prompt]:
    """Untrusted input: the demo's prompts, the first instruction prompt ending in HTML that
    must never run. (A prompt set, not an edit of `prompts.jsonl`: a rerun would find the
    edited artifact changed and prepare it again.)"""
    prompts = demo_mix(num_prompts, seed)
    first = next(p for p in prompts if p.kind == "instruction")
    first.messages[-1]["content"] += "\n" + HOSTILE
    return prompts


@pytest.fixture(scope="module")
def run_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-run")
    config = tiny_run_config(tiny_lm_dir, root / "run")
    # Greedy, the random tiny LM repeats a newline (an empty answer); sampling gives text.
    config["teachers"][0]["generation"] |= {"max_new_tokens": 8, "temperature": 1.0}
    config["prompts"]["builtin"] = "test_report:hostile_mix"
    run_pipeline(parse_config(config))
    return root / "run"


@pytest.fixture(scope="module")
def page(run_dir: Path) -> Path:
    return build_report(run_dir)


def test_train_router_stores_heldout_predictions(run_dir: Path) -> None:
    split = json.loads((run_dir / "calibration.json").read_text())
    rows = read_jsonl(run_dir / "router" / "test_predictions.jsonl")
    assert [r["prompt_id"] for r in rows] == split["router_test"]
    oracle = {r["prompt_id"]: r["oracle"] for r in read_jsonl(run_dir / "rewards.jsonl")}
    for row in rows:
        assert row["oracle"] == oracle[row["prompt_id"]]
        scores = row["router_scores"]
        assert row["router"] == max(scores, key=scores.get)


def test_run_without_heldout_predictions_is_refused_in_one_line(
    run_dir: Path, tmp_path: Path
) -> None:
    """A run from before predictions were stored: one line saying to rerun."""
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    (old / "router" / "test_predictions.jsonl").unlink()
    with pytest.raises(ReportError, match=r"test_predictions.jsonl: missing .* rerun") as err:
        load_artifacts(old)
    assert "\n" not in str(err.value)


def test_confusion_matrix_counts_heldout_prompts(run_dir: Path) -> None:
    art = load_artifacts(run_dir)
    counts = confusion_matrix(art)
    with_oracle = [r for r in art.heldout if r["oracle"] is not None]
    assert counts.sum() == len(with_oracle) > 0
    assert np.trace(counts) == sum(r["router"] == r["oracle"] for r in with_oracle)


def test_report_writes_pngs_and_embeds_them(page: Path) -> None:
    for key in PLOTS:
        png = (page.parent / f"{key}.png").read_bytes()
        assert png.startswith(PNG_MAGIC)
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == len(PLOTS)
    # Nothing is fetched from elsewhere: the page works offline and as a mail attachment.
    assert not re.search(r'(src|href)="(https?:)?//', text)


def test_figures_split_by_prompt_kind(run_dir: Path, page: Path) -> None:
    art = load_artifacts(run_dir)
    kinds = kind_figures(art)
    assert set(kinds) == {"math", "instruction"}  # the demo mix
    assert sum(k["calibration_prompts"] for k in kinds.values()) == len(art.rewards.ids)
    assert sum(k["routed_prompts"] for k in kinds.values()) == len(art.routes)
    assert sum(k["dataset_rows"] for k in kinds.values()) == len(art.dataset)
    for k in kinds.values():
        chosen = [share for share in k["oracle_share"].values() if share]
        assert sum(chosen) == pytest.approx(1.0)
        assert k["oracle_reward"] >= max(v for v in k["reward_mean"].values() if v is not None)
    # the solvers answer no instruction prompt: they can't have its best mean reward
    assert kinds["instruction"]["oracle_share"]["solver-verbose"] == 0
    text = page.read_text()
    assert "<h2>By prompt kind</h2>" in text and "<h3>math</h3>" in text
    assert "<h3>instruction</h3>" in text


def test_banner_when_no_quality_signal_applied_at_all() -> None:
    none_applied = {
        "signals": {},
        "kinds": {
            "math": {"prompts": 3, "covered": 0},
            "instruction": {"prompts": 2, "covered": 0},
        },
        "learnability_only_kinds": ["math", "instruction"],
    }
    banner = coverage_banner(none_applied)
    assert banner.count('class="banner"') == 1
    assert "No quality signal applied to any of the 5 calibration prompts" in banner
    covered = {**none_applied, "learnability_only_kinds": []}
    assert coverage_banner(covered) == ""


def test_untrusted_text_is_escaped(run_dir: Path, page: Path) -> None:
    shown = [r["messages"][0]["content"] for r in example_rows(load_artifacts(run_dir))]
    assert any(HOSTILE in prompt for prompt in shown)
    text = page.read_text()
    assert "<script>document.title" not in text
    assert 'onerror="alert' not in text
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in text


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        # Not a skip: CI installs Chromium (make test), so a missing browser is a failure.
        pytest.fail("chromium not found: install it (apt-get install -y chromium or make test)")
    return found


def test_page_and_every_image_load_in_chromium(page: Path, tmp_path: Path) -> None:
    # A copy of the page with a probe that records, once everything loaded, each image's
    # decoded width into the DOM that --dump-dom prints.
    probe = (
        "<script>addEventListener('load', () => document.body.setAttribute("
        "'data-image-widths', [...document.images].map(i => i.complete ? i.naturalWidth : 0)"
        ".join(',')));</script></body>"
    )
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", probe))
    profile = tmp_path / "profile"
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dom = result.stdout
    assert "<title>persyn report: tiny</title>" in dom  # the hostile script did not run
    widths = re.search(r'data-image-widths="([^"]*)"', dom)
    assert widths is not None, dom[-2000:]
    values = [int(w) for w in widths.group(1).split(",")]
    assert len(values) == len(PLOTS)
    assert all(w > 0 for w in values)


def test_cli_report(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").is_file()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert "finish the run first" in missing.output

"""bench/replication_section.py on a real tiny experiment with a tuned arm: the section it
writes into a results file (leaving the file's other sections alone) holds the results
table, the differences from PerSyn, the tuning cost counted from the run's files, and what
each student was trained on."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_experiment_config

from persyn.artifacts import RunArtifacts
from persyn.config import parse_config
from persyn.eval.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a tiny experiment: 2 pilots and 3 datasets' students, about 35 s
def test_the_section_of_a_tiny_experiment_with_a_tuned_arm(tiny_lm_dir: Path, tmp_path: Path):
    datasets = ["persyn", "persyn-tuned", "strong"]
    data = tiny_experiment_config(tiny_lm_dir, tmp_path, datasets, name="tiny-replication")
    data["experiment"]["bootstrap_resamples"] = 200
    # the tuned arm's study: two alphas, pilots scored on validation prompts of their own
    data["tune"] = {
        "alphas": [0.0, 0.4],
        "max_steps": 2,
        "validation": {"builtin": "demo-mix", "num_prompts": 4, "seed": 7},
        "bootstrap_resamples": 200,
    }
    config = tmp_path / "replication.yaml"
    config.write_text(yaml.safe_dump(data))
    run_experiment(parse_config(data))

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## another bench\n\nits table\n")
    subprocess.run(
        [
            sys.executable,
            "bench/replication_section.py",
            "--config",
            str(config),
            "--started",
            "2026-12-06 20:00 UTC",
            "--wall-s",
            "120",
            "--results",
            str(results),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    text = results.read_text()
    assert "## another bench\n\nits table\n" in text  # the other section is left alone
    assert "## replication: tiny-replication\n" in text
    assert "wall time 2.0 min" in text

    # the experiment's table, and one difference from PerSyn per other dataset
    rows = list(csv.DictReader((tmp_path / "exp" / "results.csv").open()))
    assert (tmp_path / "exp" / "results.md").read_text().strip() in text
    for row in rows:
        if row["dataset"] in ("persyn-tuned", "strong"):
            d, lo, hi = (float(row[k]) for k in ("vs_persyn", "vs_persyn_low", "vs_persyn_high"))
            assert f"- {row['dataset']}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]: " in text

    # tuning cost, counted from the tuned run's files
    tuned = RunArtifacts(tmp_path / "run-alphaauto")
    files = tuned.tune_files()
    assert files.table_md.read_text().strip() in text
    pilots = len(list(files.folder.glob("eval/*/metrics.json")))
    assert pilots >= 1
    assert f"- pilot students: {pilots} trained and evaluated for 2 settings" in text
    assert "- new teacher generations for tuning: 0: the " in text
    calibration = len(tuned.split().calibration)
    assert f"4 teachers x {calibration} prompts)" in text
    # its gain: against PerSyn the results' own interval (the same bootstrap draws), and
    # against the best (only) baseline
    [row] = [r for r in rows if r["dataset"] == "persyn-tuned"]
    d, lo, hi = (float(row[k]) for k in ("vs_persyn", "vs_persyn_low", "vs_persyn_high"))
    gains = text.split("Gain on the held-out prompts")[1]
    assert (
        f"- persyn-tuned - persyn (PerSyn at alpha 0.4): {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" in gains
    )
    assert "- persyn-tuned - strong (the best baseline" in gains

    # what each student was trained on: its teachers' shares, from the dataset files
    strong = [json.loads(line) for line in (tmp_path / "exp" / "datasets" / "strong.jsonl").open()]
    [teacher] = {r["teacher"] for r in strong}
    assert f"| strong | {teacher} 100% |" in text

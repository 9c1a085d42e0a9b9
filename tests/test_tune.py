"""`persyn tune` and `rewards.alpha: auto`: pilot students per reward setting, the choice
(a tie keeps the paper's setting), and the pipeline using the choice downstream."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_run_config
from typer.testing import CliRunner

from persyn.artifacts import RewardTable, RunArtifacts
from persyn.cli import app
from persyn.config import ConfigError, parse_config
from persyn.eval.stats import Interval
from persyn.eval.tune import (
    Setting,
    TuneResult,
    choose_setting,
    fold_of,
    pilot_dataset,
    pilot_rows,
    routed_choice,
    tune_settings,
    validation_prompts,
)
from persyn.eval.tune_report import duration, write_tune
from persyn.fingerprints import config_sections
from persyn.pipeline import Run, run_pipeline, run_stage, stage_fingerprints, validate
from persyn.report.html import build_report
from persyn.stages.common import teacher_fingerprint
from persyn.stages.fallback import chain_order
from persyn.stages.score import reward_table, score_responses
from persyn.stages.tune import tune_run, tuned_config
from persyn.store import read_jsonl
from persyn.teachers.base import Prompt

VALIDATION = {"builtin": "demo-mix", "num_prompts": 4, "seed": 9}


def tune_config(tiny_lm_dir: Path, run_dir: Path, alpha: Any = "auto") -> dict[str, Any]:
    data = tiny_run_config(tiny_lm_dir, run_dir)
    data["rewards"]["alpha"] = alpha
    data["student_training"] = {"batch_size": 4, "sft": {"gradient_checkpointing": False}}
    data["evaluation"] = {"max_new_tokens": 4}
    data["tune"] = {
        "alphas": [0.0, 0.4],
        "max_steps": 2,
        "max_rows": 8,
        "validation": VALIDATION,
        "bootstrap_resamples": 200,
    }
    return data


def test_alpha_auto_is_accepted_and_out_of_range_is_not(tiny_lm_dir: Path, tmp_path: Path):
    assert parse_config(tune_config(tiny_lm_dir, tmp_path)).rewards.tuned
    with pytest.raises(ConfigError, match="alpha must be in"):
        parse_config(tune_config(tiny_lm_dir, tmp_path, alpha=1.5))
    with pytest.raises(ConfigError, match="alpha must be in"):
        parse_config({**tune_config(tiny_lm_dir, tmp_path), "tune": {"alphas": [0.2, 2.0]}})


def test_the_grid_always_holds_the_papers_setting(tiny_lm_dir: Path, tmp_path: Path):
    data = tune_config(tiny_lm_dir, tmp_path)
    data["tune"].update(alphas=[0.0, 1.0], learnability_signals=["rank_surprisal_ratio"])
    settings, reference = tune_settings(parse_config(data))
    assert reference == Setting(0.4, "rank_surprisal_ratio")  # the paper's signal is not tried
    assert settings == [reference] + [Setting(a, "rank_surprisal_ratio") for a in (0.0, 1.0)]
    data["tune"]["learnability_signals"] = ["rank_surprisal_ratio", "mean_logprob"]
    settings, reference = tune_settings(parse_config(data))
    assert reference == Setting(0.4, "mean_logprob") and len(settings) == 5
    data["tune"]["learnability_signals"] = ["mean_logprob", "no_such_signal"]
    with pytest.raises(ConfigError, match=r"tune\.learnability_signals\[1\]"):
        validate(parse_config(data))


def test_a_tie_within_the_interval_keeps_the_papers_setting():
    means = {"alpha0.4-mean_logprob": 0.50, "alpha0-mean_logprob": 0.55}
    tie = {"alpha0-mean_logprob": Interval(0.05, -0.02, 0.12)}
    chosen, reason = choose_setting(means, tie, "alpha0.4-mean_logprob")
    assert chosen == "alpha0.4-mean_logprob"
    assert "includes 0: a tie" in reason and "alpha0.4-mean_logprob is kept" in reason
    clear = {"alpha0-mean_logprob": Interval(0.05, 0.01, 0.09)}
    chosen, reason = choose_setting(means, clear, "alpha0.4-mean_logprob")
    assert chosen == "alpha0-mean_logprob" and "lies above 0" in reason
    # equal scores: the reference, not whichever setting came first
    chosen, _ = choose_setting(
        {"alpha0-mean_logprob": 0.5, "alpha0.4-mean_logprob": 0.5}, {}, "alpha0.4-mean_logprob"
    )
    assert chosen == "alpha0.4-mean_logprob"


def test_overlapping_validation_prompts_are_a_one_line_error(tiny_lm_dir: Path, tmp_path: Path):
    data = tune_config(tiny_lm_dir, tmp_path)
    cfg = parse_config(data)
    run_prompt = Prompt("p7", [{"role": "user", "content": "What is  2+2?"}])
    validation = tmp_path / "validation.jsonl"
    validation.write_text(
        json.dumps({"id": "v1", "prompt": "what is 2+2"})
        + "\n"
        + json.dumps({"id": "v2", "prompt": "What is 3+3?"})
        + "\n"
    )
    data["tune"]["validation"] = {"source": str(validation)}
    with_file = parse_config(data)
    with pytest.raises(ConfigError) as err:
        validation_prompts(with_file, [run_prompt])
    message = str(err.value)
    assert "\n" not in message and message.startswith("tune.validation: 1 of 2")
    assert "v1 = run p7" in message
    # the final evaluation set is held out from the pilots too
    final = with_file.evaluation.model_copy(update={"prompts": with_file.tune.validation})
    with pytest.raises(ConfigError, match=r"v1 = evaluation\.prompts v1"):
        validation_prompts(with_file.model_copy(update={"evaluation": final}), [])
    unset = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"validation": None})})
    with pytest.raises(ConfigError, match=r"tune\.validation: not set"):
        validation_prompts(unset, [])


def test_an_explicit_alpha_keeps_its_keys_and_auto_depends_on_tune(
    tiny_lm_dir: Path, tmp_path: Path
):
    """With an explicit alpha no stage after `tune` depends on it (old run directories
    keep their fingerprints); under `auto`, a changed tune grid reruns score and after."""
    explicit = tune_config(tiny_lm_dir, tmp_path, alpha=0.4)
    other_grid = {**explicit, "tune": {**explicit["tune"], "alphas": [0.2]}}
    a, b = stage_fingerprints(parse_config(explicit)), stage_fingerprints(parse_config(other_grid))
    assert a["tune"] != b["tune"]
    assert all(a[s] == b[s] for s in ("score", "train-router", "route", "export"))
    auto = tune_config(tiny_lm_dir, tmp_path)
    auto_other = {**auto, "tune": {**auto["tune"], "alphas": [0.2]}}
    c, d = stage_fingerprints(parse_config(auto)), stage_fingerprints(parse_config(auto_other))
    assert all(c[s] != d[s] for s in ("score", "train-router", "route", "export"))


def test_the_choice_resolves_auto(tiny_lm_dir: Path, tmp_path: Path):
    cfg = parse_config(tune_config(tiny_lm_dir, tmp_path))
    store = RunArtifacts(tmp_path)
    assert tuned_config(cfg, store) is cfg  # no choice yet
    store.tune_files().choice.parent.mkdir(parents=True)
    store.tune_files().choice.write_text(
        json.dumps({"alpha": 0.0, "learnability": "rank_surprisal_ratio"})
    )
    resolved = tuned_config(cfg, store)
    assert resolved.rewards.alpha == 0.0
    assert resolved.rewards.learnability.name == "rank_surprisal_ratio"
    explicit = parse_config(tune_config(tiny_lm_dir, tmp_path, alpha=0.2))
    assert tuned_config(explicit, store) is explicit  # an explicit alpha wins


def test_alpha_auto_end_to_end_and_a_rerun_trains_nothing(tiny_lm_dir: Path, tmp_path: Path):
    data = tune_config(tiny_lm_dir, tmp_path / "run")
    data["student"]["family"] = "tiny"
    data["teachers"][0]["family"] = "tiny"
    data["tune"]["learnability_signals"] = ["mean_logprob", "rank_surprisal_ratio"]
    cfg = parse_config(data)
    summary = run_pipeline(cfg)
    store = RunArtifacts(tmp_path / "run")
    files = store.tune_files()
    for path in (files.table_md, files.table_csv, files.table_json, files.choice):
        assert path.is_file(), path
    assert files.plot.read_bytes()[:4] == b"\x89PNG"
    choice = json.loads(files.choice.read_text())
    assert choice["settings"] == [
        "alpha0-mean_logprob",
        "alpha0.4-mean_logprob",
        "alpha0-rank_surprisal_ratio",
        "alpha0.4-rank_surprisal_ratio",
    ]
    assert choice["reference"] == "alpha0.4-mean_logprob" and choice["reason"]
    table = files.table_md.read_text()
    assert "| alpha0-mean_logprob | 0 | mean_logprob | 8 |" in table
    assert f"Choice: {choice['setting']}." in table
    # Downstream used the chosen alpha: the reward table was mixed with it, and the run
    # records the choice and why.
    meta = json.loads(store.rewards_meta_path().read_text())
    assert meta["alpha"] == choice["alpha"]
    assert summary["alpha"] == choice["alpha"] and summary["tune"]["used"] is True
    assert summary["tune"]["reason"] == choice["reason"]
    assert "chosen by `persyn tune`" in store.card_path().read_text()
    page = build_report(tmp_path / "run", None).read_text()
    assert "chosen by <code>persyn tune</code>" in page
    # the other signal scored the calibration answers with the student (no generation)
    signals = {r["signal"] for r in read_jsonl(store.score_path("learnability"))}
    assert signals == {"mean_logprob", "rank_surprisal_ratio"}
    # A rerun trains and evaluates nothing: every pilot student is cached.
    students = sorted(files.folder.glob("students/*/final/persyn_training.json"))
    assert 1 <= len(students) <= 4
    stamps = {p: p.stat().st_mtime_ns for p in students}
    run_pipeline(cfg)
    again = tune_run(Run.open(cfg))
    assert again == choice
    assert {p: p.stat().st_mtime_ns for p in students} == stamps
    assert sorted(files.folder.glob("students/*/final/persyn_training.json")) == students


def test_cli_dry_run_prints_the_cost_and_trains_nothing(tiny_lm_dir: Path, tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4)))
    result = CliRunner().invoke(app, ["tune", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "2 reward settings" in out and "at most 2 pilot students" in out
    assert "2 steps of lora SFT, 8 examples seen" in out
    assert "pilot answers: routed: 2 settings x 5 folds = 10 fits of the run's router" in out
    assert "4 validation prompts x at most 2 students = at most 8 student answers" in out
    assert "new teacher generations: 0" in out
    assert "pilots: 0 done" in out and "2 to train" in out
    assert "time: not estimated: no student of this run directory has trained yet" in out
    assert not (tmp_path / "run" / "tune").exists()


def _dry_run(data: dict[str, Any], path: Path) -> str:
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["tune", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_dry_run_counts_the_pilots_done_and_times_the_rest(tiny_lm_dir: Path, tmp_path: Path):
    """After a pilot trained: the dry run counts it done (no cost), measures the minutes
    per pilot from its record (training + evaluation), and without a pilot of this grid
    estimates from the seconds per step of the students trained in the run directory."""
    data = tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4)
    data["tune"].update(alphas=[0.4], max_rows=4)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    assert CliRunner().invoke(app, ["tune", str(config)]).exit_code == 0
    files = RunArtifacts(tmp_path / "run").tune_files()
    [record_path] = files.folder.glob("eval/*/training.json")
    record = json.loads(record_path.read_text())
    assert record["steps"] == 2 and record["runtime_s"] > 0 and record["evaluation_s"] > 0

    again = _dry_run(data, config)
    assert "pilots: 1 done (stored by fingerprint: they cost nothing again), 0 to train" in again
    assert "time: none left: every pilot is done" in again
    assert "new teacher generations: 0 (pilot datasets reuse the calibration answers)" in again

    more = {**data, "tune": {**data["tune"], "alphas": [0.0, 0.4]}}
    per_pilot = duration(record["runtime_s"] + record["evaluation_s"])
    assert (
        f"pilots: 1 done (stored by fingerprint: they cost nothing again), 1 to train "
        f"time: measured: {per_pilot} per pilot (train + evaluate, mean of 1 done), "
        f"about {per_pilot} for the 1 left"
    ) in _dry_run(more, config)

    assert (duration(30), duration(600), duration(3 * 3600)) == ("30 s", "10.0 min", "3.0 h")
    longer = {**data, "tune": {**data["tune"], "max_steps": 3}}  # another key: not done
    per_step = record["runtime_s"] / 2
    assert (
        f"pilots: 0 done (stored by fingerprint: they cost nothing again), 1 to train "
        f"time: estimate: about {duration(3 * per_step)} for the 1 left (3 steps x "
        f"{per_step:.1f} s a step, measured on 1 student(s) trained in this run directory; "
        "evaluation not included)"
    ) in _dry_run(longer, config)


def test_a_tie_is_written_to_the_table_and_choice(tmp_path: Path):
    reference, other = Setting(0.4, "mean_logprob"), Setting(0.0, "mean_logprob")
    means = {other.name: 0.55, reference.name: 0.5}
    diffs = {other.name: Interval(0.05, -0.04, 0.14), reference.name: Interval(0, 0, 0)}
    chosen, reason = choose_setting(means, diffs, reference.name)
    rows = [
        {
            "setting": s.name,
            "alpha": s.alpha,
            "signal": s.signal,
            "rows": 8,
            "teachers": "a 100%",
            "score": means[s.name],
            "score_low": means[s.name] - 0.1,
            "score_high": means[s.name] + 0.1,
            "vs_reference": diffs[s.name].estimate,
            "vs_reference_low": diffs[s.name].low,
            "vs_reference_high": diffs[s.name].high,
            "chosen": s.name == chosen,
        }
        for s in (other, reference)
    ]
    files = RunArtifacts(tmp_path).tune_files()
    write_tune(TuneResult(rows, reference, reference, reason), files, 0.95)
    table = files.table_md.read_text()
    row = "| alpha0-mean_logprob | 0 | mean_logprob | 8 | a 100% | 0.550 | [0.450, 0.650] |"
    assert row + " +0.050 | [-0.040, +0.140] |  |" in table
    assert "Choice: alpha0.4-mean_logprob." in table and "a tie" in table
    choice = json.loads(files.choice.read_text())
    assert choice["alpha"] == 0.4 and choice["kept_reference"] and "includes 0" in choice["reason"]
    assert files.plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_tune_with_an_explicit_alpha_runs_the_study_alone(tiny_lm_dir: Path, tmp_path: Path):
    """`persyn tune` on a run with alpha 0.4: the study and its files, but the run's own
    stages after `calibrate` are left alone (it keeps its alpha)."""
    data = tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4)
    data["tune"].update(alphas=[0.4], max_rows=4)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["tune", str(path)])
    assert result.exit_code == 0, result.output
    assert "at most 1 pilot students" in result.output
    assert "Choice: alpha0.4-mean_logprob." in result.output
    store = RunArtifacts(tmp_path / "run")
    assert store.tune_choice()["alpha"] == 0.4
    assert store.marker("calibrate") is not None and store.marker("score") is None


def test_the_tuned_persyn_baseline_is_the_run_with_alpha_auto(tiny_lm_dir: Path, tmp_path: Path):
    """`experiment.datasets: [persyn-tuned]`: a sibling run with `rewards.alpha: auto`
    (tune, then score/router/routes at its choice) beside the run at its own alpha."""
    from persyn.eval.baselines import BASELINES, BaselineContext
    from persyn.eval.experiment import experiment_prompts

    cfg = parse_config(tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4))
    run_pipeline(cfg)
    run = Run.open(cfg)
    ctx = BaselineContext(run, experiment_prompts(run), cfg.experiment)
    choice = BASELINES["persyn-tuned"](ctx)
    sibling = RunArtifacts(tmp_path / "run-alphaauto")
    chosen = json.loads(sibling.tune_files().choice.read_text())
    assert json.loads(sibling.rewards_meta_path().read_text())["alpha"] == chosen["alpha"]
    assert set(choice) == set(ctx.prompt_ids)
    assert json.loads(run.store.rewards_meta_path().read_text())["alpha"] == 0.4  # untouched
    # each run directory's config is its own (the sibling starts as a linked copy)
    assert sibling.config().rewards.alpha == "auto"
    assert sibling.config().run_dir == str(tmp_path / "run-alphaauto")
    assert run.store.config().rewards.alpha == 0.4


def test_folds_are_seeded_and_even():
    ids = [f"p{i}" for i in range(23)]
    fold = fold_of(ids, 5, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [4, 4, 5, 5, 5]
    assert fold_of(ids, 5, seed=0).tolist() == fold.tolist()
    assert fold_of(ids, 5, seed=1).tolist() != fold.tolist()


def _calibration_rewards(data: dict[str, Any]) -> tuple[Run, RewardTable]:
    """The run of `data` up to `calibrate`, and its calibration prompts' reward table."""
    run = Run.open(parse_config(data))
    run_stage(run, "calibrate")
    ids = run.store.split().calibration
    learn, qual, _ = score_responses(run, ids)
    return run, reward_table(run, ids, learn, qual)


def _routed_and_seeded(run: Run, table: RewardTable) -> np.ndarray:
    """`routed_choice`: a teacher of the pool per prompt, the same again (seeded fits)."""
    routed, scores = routed_choice(run, table)
    assert routed.shape == (len(table.ids),) and set(routed.tolist()) <= set(range(4))
    assert scores.shape == (len(table.ids), 4)
    assert routed_choice(run, table)[0].tolist() == routed.tolist()
    return routed


def test_a_routed_pilot_is_routed_by_routers_that_never_saw_the_prompt(
    tiny_lm_dir: Path, tmp_path: Path
):
    """Cross-fitting: giving one calibration prompt's worst teacher a reward far above the
    rest makes that teacher its oracle answer, but does not move its routed answer (the
    router that routes it trained on the other folds); the pilot dataset takes the routed
    teachers, and is written apart from an oracle pilot's."""
    data = tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4)
    data["tune"].update(max_rows=None, pilot_folds=4)
    run, table = _calibration_rewards(data)
    ids = table.ids
    routed = _routed_and_seeded(run, table)

    names = run.cfg.teacher_names
    i = next(i for i, o in enumerate(table.oracle) if o is not None)
    worst = int(np.nanargmin(table.reward[i]))
    assert table.oracle[i] != names[worst]
    reward = table.reward.copy()
    reward[i, worst] = np.nanmax(reward) + 10.0
    rigged = dataclasses.replace(table, reward=reward)
    assert names[int(np.nanargmax(rigged.routing_reward[i]))] == names[worst]
    assert routed_choice(run, rigged)[0][i] == routed[i]

    # nothing to learn on the other folds (every answer rewarded alike): no router is fit,
    # the teacher best on mean reward (here the first, all tied) routes every prompt
    flat = dataclasses.replace(table, reward=np.ones_like(table.reward))
    assert routed_choice(run, flat)[0].tolist() == [0] * len(ids)

    rows = pilot_rows(run, Setting(0.4, "mean_logprob"), ids)
    picked = dict(zip(ids, routed.tolist(), strict=True))
    assert rows and all(r["teacher"] == names[picked[r["id"]]] for r in rows)
    oracle = parse_config({**data, "tune": {**data["tune"], "pilot_answers": "oracle"}})
    files = run.store.tune_files()
    paths = {pilot_dataset(files, c, Setting(0.4, "mean_logprob")) for c in (run.cfg, oracle)}
    assert len(paths) == 2
    # the uncovered-prompt policy, which pilots do not follow, leaves the key alone
    active = {"uncovered": "calibrate", "vote_width": 0.1}
    calibrating = parse_config({**data, "routing": active})
    same = pilot_dataset(files, calibrating, Setting(0.4, "mean_logprob"))
    assert same == pilot_dataset(files, run.cfg, Setting(0.4, "mean_logprob"))


def test_a_routed_pilot_falls_back_where_the_routed_answer_failed(
    tiny_lm_dir: Path, tmp_path: Path
):
    """As `generate` does: a prompt whose routed teacher's answer failed takes the next
    teacher of its fallback chain (the router's next best) in the pilot; with
    `routing.fallback_tries: 0` it is left out."""
    data = tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4)
    data["tune"].update(max_rows=None, pilot_folds=4)
    run, table = _calibration_rewards(data)
    routed, _ = routed_choice(run, table)
    i, pid = 0, table.ids[0]
    teacher = run.cfg.teachers[int(routed[i])]
    log = run.store.generation_log(teacher.name)
    answer = log.get((pid, teacher_fingerprint(teacher)))
    assert answer is not None and answer["error"] is None
    log.append([{**answer, "error": "RuntimeError: the teacher was down"}])

    learn, qual, _ = score_responses(run, table.ids, retry_failed=False)
    failing = reward_table(run, table.ids, learn, qual)
    # the prompt's own route does not move: its routers never saw its rewards
    again, scores = routed_choice(run, failing)
    assert again[i] == routed[i]
    names = run.cfg.teacher_names
    chain = chain_order(
        run.cfg,
        {"teacher": teacher.name, "router_scores": dict(zip(names, scores[i], strict=True))},
    )
    rows = {r["id"]: r for r in pilot_rows(run, Setting(0.4, "mean_logprob"), table.ids)}
    assert chain[0] == teacher.name and rows[pid]["teacher"] == chain[1]

    strict = parse_config({**data, "routing": {"fallback_tries": 0}})
    kept = pilot_rows(dataclasses.replace(run, cfg=strict), Setting(0.4, "mean_logprob"), table.ids)
    assert pid not in {r["id"] for r in kept} and len(kept) == len(rows) - 1
    # the fallback's length decides the pilot: in its dataset's key and the tune stage's
    files, setting = run.store.tune_files(), Setting(0.4, "mean_logprob")
    assert pilot_dataset(files, strict, setting) != pilot_dataset(files, run.cfg, setting)
    assert config_sections(strict)["tune"] != config_sections(run.cfg)["tune"]
    default = parse_config({**data, "routing": {"fallback_tries": 2}})
    assert config_sections(default)["tune"] == config_sections(run.cfg)["tune"]


def test_routed_pilots_with_the_lm_router(tiny_lm_dir: Path, tmp_path: Path):
    """The LM router as the run's router: one fit of its backbone per fold, every prompt
    routed to a teacher of the pool."""
    data = tune_config(tiny_lm_dir, tmp_path / "run", alpha=0.4)
    lm = {"epochs": 2, "batch_size": 4, "lora_r": 4}
    data["router"] = {**data["router"], "kind": "lm-bradley-terry", "backbone": str(tiny_lm_dir)}
    data["router"]["lm"] = lm
    data["tune"].update(pilot_folds=2)
    _routed_and_seeded(*_calibration_rewards(data))

"""The student-side `persyn` commands: train, evaluate, compare datasets (`experiment`)
and choose the reward setting for this student (`tune`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from persyn.artifacts import RunArtifacts, StudentEvalFiles, StudentFiles
from persyn.cli_common import (
    ConfigArg,
    QuietOpt,
    ReplaceOpt,
    RunDirOpt,
    SetOpt,
    StudentOpt,
    console,
    load_cli_config,
    one_student,
    open_run,
    user_errors,
)
from persyn.pipeline import run_stage, working_in
from persyn.progress import set_quiet


def register_student_commands(app: typer.Typer) -> None:
    """Add the commands below to `app`."""
    app.command("tune")(tune_cmd)
    app.command("train-student")(train_student_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("experiment")(experiment_cmd)


def tune_cmd(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the cost; stop.")] = False,
    replace: ReplaceOpt = False,
    student: StudentOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Choose the reward setting (alpha, learnability signal) with pilot students trained on
    the calibration answers, after printing what that costs; rewards.alpha: auto uses it."""
    from persyn.eval.tune_report import tune_plan
    from persyn.stages.tune import tune_run

    set_quiet(quiet)
    with user_errors():
        run_ = open_run(load_cli_config(config, set_), run_dir, student)
        cfg = run_.cfg
        console.print("\n".join(tune_plan(run_)), markup=False, highlight=False)
        if dry_run:
            return
        with working_in(run_, replace):  # with an explicit alpha: the study alone
            run_stage(run_, "tune" if cfg.rewards.tuned else "calibrate")
            if not cfg.rewards.tuned:
                tune_run(run_)
    table = run_.store.tune_files().table_md
    console.print(table.read_text(), f"written to {table.parent}", sep="\n", markup=False)


def train_student_cmd(
    config: ConfigArg,
    dataset: Annotated[
        str | None,
        typer.Option(help="JSONL or `datasets` folder with `messages` (default: the run's)."),
    ] = None,
    output_dir: Annotated[
        str | None, typer.Option(help="Checkpoints (default: <run_dir>/student).")
    ] = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the student on a dataset with TRL (LoRA or full); resumes. Multi-GPU:
    `accelerate launch $(which persyn) train-student CONFIG`."""
    from persyn.student.sft import train_student

    set_quiet(quiet)
    with user_errors():
        cfg = one_student(load_cli_config(config, set_), "train-student")
        final = train_student(cfg, dataset, output_dir)
    console.print(f"student checkpoint: {final}")


def evaluate_cmd(
    config: ConfigArg,
    model: Annotated[
        str | None, typer.Option(help="Checkpoint to evaluate (default: <run_dir>/student/final).")
    ] = None,
    output_dir: Annotated[str | None, typer.Option(help="Default: <checkpoint>/eval.")] = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Student answers the held-out prompts (`evaluation.prompts`); math and IFEval accuracy.

    The prompts are checked disjoint from the checkpoint's training prompts first."""
    from persyn.eval.student import evaluate_checkpoint
    from persyn.run import make_executor

    set_quiet(quiet)
    with user_errors():
        cfg = one_student(load_cli_config(config, set_), "evaluate")
        path = Path(model or StudentFiles(RunArtifacts(cfg.run_dir).student_dir()).final)
        out = output_dir or StudentEvalFiles.beside(path)
        metrics = evaluate_checkpoint(cfg, path, out, make_executor(cfg))
    console.print_json(json.dumps(metrics))


def experiment_cmd(config: ConfigArg, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """Train and evaluate the student on PerSyn's dataset and on each baseline's."""
    from persyn.eval.experiment import output_dir, run_experiment
    from persyn.eval.results import results_markdown

    set_quiet(quiet)
    with user_errors():
        cfg = one_student(load_cli_config(config, set_), "experiment")
        results = run_experiment(cfg)
    console.print(results_markdown(results), markup=False, highlight=False)
    console.print(f"written to {output_dir(cfg)}")

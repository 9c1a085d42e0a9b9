"""`persyn ...`: a thin Typer layer over `persyn.pipeline`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from persyn.artifacts import RunArtifacts
from persyn.cli_common import (
    ConfigArg,
    QuietOpt,
    ReplaceOpt,
    RunDirOpt,
    SetOpt,
    StudentOpt,
    console,
    load_cli_config,
    open_run,
    user_errors,
)
from persyn.cli_help import USAGE, MaxCostOpt, PilotOpt, UserOrder, VerboseOpt, VersionOpt
from persyn.cli_store import store_app
from persyn.cli_student import register_student_commands
from persyn.config import ConfigError
from persyn.pipeline import STAGES, Run, StageError, run_pipeline, run_stage, working_in
from persyn.progress import set_quiet, set_verbose
from persyn.report.headline import print_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help=USAGE, cls=UserOrder)
app.add_typer(store_app, name="store")


@app.callback()
def main(version: VersionOpt = False, verbose: VerboseOpt = False) -> None:
    set_verbose(verbose)


def demo_config_path() -> Path:
    return Path(str(resources.files("persyn") / "configs" / "demo.yaml"))


@app.command()
def run(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    replace: ReplaceOpt = False,
    max_cost: MaxCostOpt = None,
    student: StudentOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage (each skipped when already done).

    With `students:` in the config: every student's (or --student NAME's), then their
    comparison."""
    from persyn.report.students import print_students

    set_quiet(quiet)
    with user_errors():
        cfg = load_cli_config(config, set_, max_cost)
        summary = run_pipeline(cfg, run_dir, replace, student)
    show = print_students if cfg.students else print_summary
    show(summary, run_dir or cfg.run_dir, console)


@app.command()
def demo(
    run_dir: Annotated[str, typer.Option(help="Where to write the run.")] = "runs/demo",
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the shipped offline demo (packaged SmolLM2 student, mixed teacher pool)."""
    set_quiet(quiet)
    with user_errors():
        cfg = load_cli_config(demo_config_path(), set_)
        summary = run_pipeline(cfg, run_dir)
    RunArtifacts(run_dir).write_demo_summary(summary)
    print_summary(summary, run_dir, console)


@app.command("validate")
def validate_cmd(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config, its prompts and teachers without loading any model.

    Keys, backends, model paths, prompts, and which prompts a quality signal covers."""
    from persyn.config_checks import check_quality_coverage
    from persyn.data import load_prompts

    with user_errors():
        cfg = load_cli_config(config, set_)
        prompts = load_prompts(cfg.prompts)
        n = len(prompts)
        imported = ""
        if cfg.calibration.source is not None:
            from persyn.calibration_import import load_import, quality_table, with_imported_scores

            data = load_import(cfg)
            imported = f", {len(data.prompts)} imported prompts with {len(data.answers)} answers"
            scores = quality_table(data.answers)
            prompts += [with_imported_scores(p, scores) for p in data.prompts]
        kinds = check_quality_coverage(cfg, prompts)
    covered = ", ".join(f"{k} {c['covered']}/{c['prompts']}" for k, c in kinds.items())
    console.print(
        f"ok: {len(cfg.teachers)} teachers, {n} prompts{imported}; "
        f"prompts with a quality signal: {covered}"
    )


@app.command("plan")
def plan_cmd(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    pilot: PilotOpt = 0,
    out: Annotated[Path | None, typer.Option(help="The JSON's path (RUN_DIR/plan.json).")] = None,
    replace: ReplaceOpt = False,
    max_cost: MaxCostOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Estimate the run's generations, tokens, money and time; calls no model.

    Route then Generate against Generate then Select; --pilot N asks each teacher N
    calibration prompts first and estimates from their answers."""
    from persyn.plan import plan, plan_lines
    from persyn.store import atomic_write_json

    set_quiet(quiet)
    with user_errors():
        cfg = load_cli_config(config, set_, max_cost)
        estimate = plan(cfg, pilot, run_dir, replace)
        path = out or RunArtifacts(run_dir or cfg.run_dir).plan_path()
        atomic_write_json(path, estimate)
    for line in plan_lines(estimate):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"written to {path}", markup=False, highlight=False, soft_wrap=True)


@app.command("import")
def import_cmd(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    replace: ReplaceOpt = False,
    max_cost: MaxCostOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Calibrate from the answers of an existing dataset (`calibration.source`).

    Its prompts become the calibration set and its answers the calibration rows (the
    `prepare` and `calibrate` stages); nothing is generated unless `fill_missing` is set."""
    set_quiet(quiet)
    with user_errors():
        cfg = load_cli_config(config, set_, max_cost)
        if cfg.calibration.source is None:
            raise ConfigError(f"{config}: calibration.source is not set; nothing to import")
        run_ = Run.open(cfg, run_dir)
        marker = run_stage(run_, "calibrate", replace)
        calibration = len(run_.store.split().calibration)
    per_teacher = ", ".join(
        f"{t} {v['imported']} imported + {v['generated']} generated"
        for t, v in marker["teachers"].items()
    )
    console.print(f"import: {calibration} calibration prompts; answers: {per_teacher}")


def _stage_command(stage: str) -> None:
    def command(
        config: ConfigArg,
        run_dir: RunDirOpt = None,
        set_: SetOpt = None,
        replace: ReplaceOpt = False,
        max_cost: MaxCostOpt = None,
        student: StudentOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        set_quiet(quiet)
        with user_errors():
            cfg = load_cli_config(config, set_, max_cost)
            run_stage(open_run(cfg, run_dir, student), stage, replace)
        console.print(f"{stage}: done")

    command.__doc__ = f"Run the `{stage}` stage (and any earlier stage not yet done)."
    app.command(stage)(command)


for _stage in STAGES:
    if _stage not in {"score", "tune"}:  # own commands below (alpha sweeps; the plan)
        _stage_command(_stage)


@app.command("score")
def score_cmd(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    alpha: Annotated[
        str | None,
        typer.Option(
            "--alpha",
            help="Comma-separated alphas to sweep, e.g. 0.1,0.4,0.7: re-mixes the cached "
            "scores (no model call), writes rewards_alpha{a}.jsonl each and alpha_sweep.md.",
        ),
    ] = None,
    replace: ReplaceOpt = False,
    max_cost: MaxCostOpt = None,
    student: StudentOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the `score` stage (and any earlier stage not yet done); --alpha sweeps the mix."""
    from persyn.stages.score import alpha_sweep

    set_quiet(quiet)
    with user_errors():
        cfg = load_cli_config(config, set_, max_cost)
        run_ = open_run(cfg, run_dir, student)
        with working_in(run_, replace):
            run_stage(run_, "score")
            if alpha is not None:
                try:
                    alphas = [float(a) for a in alpha.split(",")]
                except ValueError:
                    raise StageError(
                        f"--alpha {alpha!r}: expected numbers like 0.1,0.4,0.7"
                    ) from None
                alpha_sweep(run_, alphas)
    if alpha is None:
        console.print("score: done")
    else:
        table = run_.store.alpha_sweep_table()
        console.print(table.read_text(), markup=False, highlight=False)
        console.print(f"written to {table} and rewards_alpha*.jsonl")


RunDirArg = Annotated[Path, typer.Argument(help="A run directory (the config's run_dir).")]


@app.command()
def report(
    run_dir: RunDirArg,
    out: Annotated[
        Path | None, typer.Option(help="Where to write report.html and the PNG plots.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write an HTML report with PNG plots of a finished run (RUN_DIR/report by default)."""
    from persyn.report.data import ReportError
    from persyn.report.html import build_report

    set_quiet(quiet)
    with user_errors(ReportError):
        page = build_report(run_dir, out)
    console.print(f"report: {page}")


@app.command()
def inspect(run_dir: RunDirArg) -> None:
    """Show a run's stages, rows, errors and where its artifacts are."""
    from persyn.report.inspect import inspect_run, print_inspection

    with user_errors(FileNotFoundError):
        found = inspect_run(run_dir)
    print_inspection(found, console)


@app.command("eval-router")
def eval_router(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    routers: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated router kinds to compare (default: the configured one, "
            "bradley-terry, best-fixed, random, knn, mf)."
        ),
    ] = None,
    student: StudentOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Routers side by side on held-out calibration prompts; writes router/eval.md."""
    from persyn.eval.routers import evaluate_routers

    set_quiet(quiet)
    with user_errors(ValueError):
        cfg = load_cli_config(config, set_)
        run_ = open_run(cfg, run_dir, student)
        kinds = [k.strip() for k in routers.split(",")] if routers else None
        with working_in(run_):  # it writes router/eval.*
            run_stage(run_, "score")
            result = evaluate_routers(run_, kinds)
    console.print(result["markdown"], markup=False, highlight=False)
    console.print(f"written to {result['path']}")


register_student_commands(app)

"""`persyn ...`: a thin Typer layer over `persyn.pipeline`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from persyn.artifacts import RunArtifacts, StudentEvalFiles, StudentFiles
from persyn.cli_help import USAGE, MaxCostOpt, PilotOpt, UserOrder, VerboseOpt, VersionOpt
from persyn.config import ConfigError, RunConfig, load_config
from persyn.data import DataError
from persyn.pipeline import STAGES, Run, StageError, run_pipeline, run_stage, validate, working_in
from persyn.progress import set_quiet, set_verbose
from persyn.redact import redact_text
from persyn.report.headline import print_summary
from persyn.store import RunDirBusy

app = typer.Typer(add_completion=False, no_args_is_help=True, help=USAGE, cls=UserOrder)
console = Console()


@app.callback()
def main(version: VersionOpt = False, verbose: VerboseOpt = False) -> None:
    set_verbose(verbose)


ConfigArg = Annotated[Path, typer.Argument(help="YAML run config.")]
RunDirOpt = Annotated[str | None, typer.Option("--run-dir", help="Override the config's run_dir.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set rewards.alpha=0.5 (repeatable)."),
]
ReplaceOpt = Annotated[
    bool, typer.Option("--replace", help="Reuse a run directory another config made.")
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", envvar="PERSYN_QUIET", help="No progress bars or logs (CI, log files)."
    ),
]


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    import yaml

    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _load(config: Path, overrides: list[str] | None, max_cost: float | None = None) -> RunConfig:
    values = _overrides(overrides)
    if max_cost is not None:
        values["max_cost"] = max_cost
    cfg = load_config(config, values)
    validate(cfg)
    return cfg


@contextmanager
def user_errors(*extra: type[Exception]) -> Iterator[None]:
    """Turn the errors a user can fix into one red line and exit code 2 (no traceback)."""
    try:
        yield
    except (ConfigError, DataError, StageError, RunDirBusy, *extra) as err:
        _fail(err)


def _fail(err: Exception) -> None:
    # One line, secrets scrubbed, and printed as text: a message quoting "[...]" (a file's
    # line, a list of teachers) must not be read as console markup and lose words.
    line = " ".join(redact_text(str(err)).split())
    console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def demo_config_path() -> Path:
    return Path(str(resources.files("persyn") / "configs" / "demo.yaml"))


@app.command()
def run(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    replace: ReplaceOpt = False,
    max_cost: MaxCostOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage (each skipped when already done)."""
    set_quiet(quiet)
    with user_errors():
        cfg = _load(config, set_, max_cost)
        summary = run_pipeline(cfg, run_dir, replace)
    print_summary(summary, run_dir or cfg.run_dir, console)


@app.command()
def demo(
    run_dir: Annotated[str, typer.Option(help="Where to write the run.")] = "runs/demo",
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the shipped offline demo (packaged SmolLM2 student, mixed teacher pool)."""
    set_quiet(quiet)
    with user_errors():
        cfg = _load(demo_config_path(), set_)
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
        cfg = _load(config, set_)
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
        cfg = _load(config, set_, max_cost)
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
        cfg = _load(config, set_, max_cost)
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
        quiet: QuietOpt = False,
    ) -> None:
        set_quiet(quiet)
        with user_errors():
            cfg = _load(config, set_, max_cost)
            run_stage(Run.open(cfg, run_dir), stage, replace)
        console.print(f"{stage}: done")

    command.__doc__ = f"Run the `{stage}` stage (and any earlier stage not yet done)."
    app.command(stage)(command)


for _stage in STAGES:
    if _stage != "score":  # `score` has its own command below (alpha sweeps)
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
    quiet: QuietOpt = False,
) -> None:
    """Run the `score` stage (and any earlier stage not yet done); --alpha sweeps the mix."""
    from persyn.stages.score import alpha_sweep

    set_quiet(quiet)
    with user_errors():
        cfg = _load(config, set_, max_cost)
        run_ = Run.open(cfg, run_dir)
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
    quiet: QuietOpt = False,
) -> None:
    """Routers side by side on held-out calibration prompts; writes router/eval.md."""
    from persyn.eval.routers import evaluate_routers

    set_quiet(quiet)
    with user_errors(ValueError):
        cfg = _load(config, set_)
        run_ = Run.open(cfg, run_dir)
        kinds = [k.strip() for k in routers.split(",")] if routers else None
        with working_in(run_):  # it writes router/eval.*
            run_stage(run_, "score")
            result = evaluate_routers(run_, kinds)
    console.print(result["markdown"], markup=False, highlight=False)
    console.print(f"written to {result['path']}")


@app.command("train-student")
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
        cfg = _load(config, set_)
        final = train_student(cfg, dataset, output_dir)
    console.print(f"student checkpoint: {final}")


@app.command("evaluate")
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
        cfg = _load(config, set_)
        path = Path(model or StudentFiles(RunArtifacts(cfg.run_dir).student_dir()).final)
        out = output_dir or StudentEvalFiles.beside(path)
        metrics = evaluate_checkpoint(cfg, path, out, make_executor(cfg))
    console.print_json(json.dumps(metrics))


@app.command("experiment")
def experiment_cmd(config: ConfigArg, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """Train and evaluate the student on PerSyn's dataset and on each baseline's."""
    from persyn.eval.experiment import output_dir, run_experiment
    from persyn.eval.results import results_markdown

    set_quiet(quiet)
    with user_errors():
        cfg = _load(config, set_)
        results = run_experiment(cfg)
    console.print(results_markdown(results), markup=False, highlight=False)
    console.print(f"written to {output_dir(cfg)}")

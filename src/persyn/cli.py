"""`persyn ...`: a thin Typer layer over `persyn.pipeline`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from persyn.config import ConfigError, RunConfig, load_config
from persyn.data import DataError
from persyn.pipeline import STAGES, Run, StageError, run_pipeline, run_stage, validate
from persyn.progress import set_quiet

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

ConfigArg = Annotated[Path, typer.Argument(help="YAML run config.")]
RunDirOpt = Annotated[
    str | None, typer.Option("--run-dir", help="Override the config's run_dir.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set rewards.alpha=0.5 (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or logs.")]


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    import yaml

    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _load(config: Path, overrides: list[str] | None) -> RunConfig:
    cfg = load_config(config, _overrides(overrides))
    validate(cfg)
    return cfg


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def demo_config_path() -> Path:
    return Path(str(resources.files("persyn") / "configs" / "demo.yaml"))


def print_summary(summary: dict[str, Any], run_dir: str) -> None:
    """The headline numbers: oracle shares, router vs best single teacher, generations."""
    table = Table(title="teachers", title_justify="left")
    for col in ("teacher", "oracle share (calibration)", "router share (routed)", "dataset share"):
        table.add_column(col, justify="right" if col != "teacher" else "left")
    for t in summary["oracle_share"]:
        table.add_row(
            t,
            f"{summary['oracle_share'][t]:.0%}",
            f"{summary['router_share'][t]:.0%}",
            f"{summary['dataset_share'][t]:.0%}",
        )
    console.print(table)
    held = summary.get("router_heldout")
    if held:
        console.print(
            f"router on {int(held['prompts'])} held-out calibration prompts: top-1 agreement "
            f"with the oracle {held['top1']:.0%}, pairwise accuracy {held['pairwise_accuracy']:.0%}\n"
            f"  mean combined reward: router {held['reward']:.3f} | best single teacher "
            f"{held['best_fixed_reward']:.3f} | random {held['random_reward']:.3f} | "
            f"oracle {held['oracle_reward']:.3f}"
        )
    console.print(
        f"generations: {summary['generations']} used vs {summary['generate_then_select_generations']}"
        f" for Generate-then-Select ({summary['generation_ratio']:.0%}); dataset rows "
        f"{summary['dataset_rows']}, failed {summary['failed_rows']}\n"
        f"artifacts in {run_dir} (dataset.jsonl, dataset/, summary.json)"
    )


@app.command()
def run(config: ConfigArg, run_dir: RunDirOpt = None, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """Run every stage (each skipped when already done)."""
    set_quiet(quiet)
    try:
        cfg = _load(config, set_)
        summary = run_pipeline(cfg, run_dir)
    except (ConfigError, DataError, StageError) as err:
        _fail(err)
    print_summary(summary, run_dir or cfg.run_dir)


@app.command()
def demo(
    run_dir: Annotated[str, typer.Option(help="Where to write the run.")] = "runs/demo",
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the shipped offline demo (packaged SmolLM2 student, mixed teacher pool)."""
    set_quiet(quiet)
    try:
        cfg = _load(demo_config_path(), set_)
        summary = run_pipeline(cfg, run_dir)
    except (ConfigError, DataError, StageError) as err:
        _fail(err)
    (Path(run_dir) / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, run_dir)


@app.command("validate")
def validate_cmd(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config (keys, backends, model paths, prompts) without loading any model."""
    from persyn.data import load_prompts

    try:
        cfg = _load(config, set_)
        n = len(load_prompts(cfg.prompts))
    except (ConfigError, DataError, StageError) as err:
        _fail(err)
    console.print(f"ok: {len(cfg.teachers)} teachers, {n} prompts")


def _stage_command(stage: str) -> None:
    def command(
        config: ConfigArg, run_dir: RunDirOpt = None, set_: SetOpt = None, quiet: QuietOpt = False
    ) -> None:
        set_quiet(quiet)
        try:
            cfg = _load(config, set_)
            run_stage(Run.open(cfg, run_dir), stage)
        except (ConfigError, DataError, StageError) as err:
            _fail(err)
        console.print(f"{stage}: done")

    command.__doc__ = f"Run the `{stage}` stage (and any earlier stage not yet done)."
    app.command(stage)(command)


for _stage in STAGES:
    _stage_command(_stage)

"""`RunArtifacts`: the run directory's artifacts by name, each with a reader and a writer
(the layout: `persyn.artifacts`)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

from persyn.artifacts.folders import ActiveFiles, ReportFiles, RouterCheckpoint, TuneFiles
from persyn.artifacts.rows import (
    SCORE_CHECKS,
    SCORE_SIGNALS,
    RewardTable,
    RowLogSpec,
    Split,
    check_generation_row,
    dataset_features,
)
from persyn.config import RunConfig, load_config
from persyn.redact import redact
from persyn.store import (
    RowLog,
    RunStore,
    atomic_write_json,
    atomic_write_text,
    iter_jsonl,
    read_jsonl,
    write_jsonl,
)
from persyn.teachers.base import Prompt


class RunArtifacts(RunStore):
    """The run directory's artifacts by name, each with a reader and a writer."""

    # -- config and prompts -------------------------------------------------------------
    def config_path(self) -> Path:
        return self.path("config.yaml")

    def write_config(self, cfg: RunConfig) -> None:
        # Redacted: a run directory gets copied and shared; keys pasted into a URL or
        # `extra_body` must not travel with it.
        text = yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)
        atomic_write_text(self.config_path(), text)

    def config(self) -> RunConfig:
        return load_config(self.config_path(), resolve=False)

    def owner_path(self) -> Path:
        return self.path("owner.json")

    def owner(self) -> dict[str, Any] | None:
        """What the run directory's config ran on (`persyn.run.run_owner`); None for a new
        directory, one from before persyn recorded it, or an unreadable record."""
        try:
            owner = json.loads(self.owner_path().read_bytes())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def write_owner(self, owner: dict[str, Any]) -> None:
        atomic_write_json(self.owner_path(), owner)

    def prompts_path(self) -> Path:
        return self.path("prompts.jsonl")

    def prompts(self) -> list[Prompt]:
        return [Prompt.from_row(r) for r in read_jsonl(self.prompts_path())]

    def write_prompts(self, prompts: Iterable[Prompt]) -> None:
        write_jsonl(self.prompts_path(), (p.to_row() for p in prompts))

    def split_path(self) -> Path:
        return self.path("calibration.json")

    def split(self) -> Split:
        return Split(**json.loads(self.split_path().read_text()))

    def write_split(self, split: Split) -> None:
        atomic_write_json(self.split_path(), split.__dict__)

    def imported_path(self) -> Path:
        return self.path("imported.jsonl")

    def write_imported(self, rows: list[dict[str, Any]]) -> None:
        """The calibration answers `prepare` read from `calibration.source` (one row per
        answer: prompt_id, model, teacher, text, raw_score, score, completion_tokens,
        source_row); `calibrate` copies them into the generation logs."""
        write_jsonl(self.imported_path(), rows)

    def imported(self) -> list[dict[str, Any]]:
        return read_jsonl(self.imported_path())

    # -- row logs -----------------------------------------------------------------------
    def generation_path(self, teacher: str) -> Path:
        return self.path("generations", f"{teacher}.jsonl")

    def generation_log(self, teacher: str) -> RowLog:
        return RowLog(self.generation_path(teacher), ("prompt_id", "fp"), check_generation_row)

    def batch_record(self, teacher: str, stage: str) -> Path:
        """The Batch API batch `teacher` waits for in `stage` (`persyn.teachers.
        openai_batch`): polled again by a rerun after a kill, removed once answered."""
        return self.path("batches", f"{teacher}.{re.sub(r'[^A-Za-z0-9_.-]+', '-', stage)}.json")

    def generation_files(self) -> list[Path]:
        return sorted(self.path("generations").glob("*.jsonl"))

    def score_log(self, signal: str) -> RowLog:
        """`learnability` or `quality` scores, keyed by prompt, teacher and fingerprint."""
        return RowLog(self.score_path(signal), ("prompt_id", "teacher", "fp"), SCORE_CHECKS[signal])

    def score_path(self, signal: str) -> Path:
        return self.path("scores", f"{signal}.jsonl")

    def router_score_log(self) -> RowLog:
        return RowLog(self.path("router", "scores.jsonl"), ("prompt_id", "fp"))

    # -- rewards ------------------------------------------------------------------------
    def rewards_path(self, alpha: float | None = None) -> Path:
        return self.path("rewards.jsonl" if alpha is None else f"rewards_alpha{alpha:g}.jsonl")

    def write_rewards(self, table: RewardTable, alpha: float | None = None) -> None:
        """`rewards.jsonl` (the run's alpha) or `rewards_alpha<a>.jsonl` (a sweep)."""
        write_jsonl(self.rewards_path(alpha), table.to_rows())

    def rewards_meta_path(self) -> Path:
        return self.path("rewards_meta.json")

    def write_rewards_meta(self, teachers: list[str], alpha: float, normalization: str) -> None:
        meta = {"teachers": teachers, "alpha": alpha, "normalization": normalization}
        atomic_write_json(self.rewards_meta_path(), meta)

    def reward_teachers(self) -> list[str]:
        """The teachers (columns) of `rewards.jsonl`, in order."""
        return json.loads(self.rewards_meta_path().read_text())["teachers"]

    def rewards(self, alpha: float | None = None) -> RewardTable:
        return RewardTable.from_rows(read_jsonl(self.rewards_path(alpha)), self.reward_teachers())

    def write_alpha_sweep(self, sweep: dict[str, Any], table: str) -> None:
        atomic_write_json(self.path("alpha_sweep.json"), sweep)
        atomic_write_text(self.alpha_sweep_table(), table)

    def calibration_rewards(self) -> RewardTable:
        """The reward table of every calibration prompt: `rewards.jsonl`, or with prompts
        added by active calibration, its table (those prompts included)."""
        active = self.active()
        return active.rewards(self.reward_teachers()) if active.added() else self.rewards()

    def alpha_sweep_table(self) -> Path:
        return self.path("alpha_sweep.md")

    # -- router -------------------------------------------------------------------------
    def router_dir(self) -> Path:
        return self.path("router")

    def router_checkpoint(self) -> RouterCheckpoint:
        return RouterCheckpoint(self.router_dir())

    def router_checkpoint_files(self) -> list[Path]:
        """The router checkpoint: `router.json` and the state files the router wrote beside
        it, not the scores, metrics and evaluations kept in the same folder."""
        folder, meta = self.router_dir(), self.router_checkpoint().meta_path
        others = {"scores.jsonl", "metrics.json", "test_predictions.jsonl", "eval.json", "eval.md"}
        state = (
            sorted(
                p
                for p in folder.iterdir()
                if p.is_file()
                and p.name not in {*others, meta.name}
                and not p.name.startswith(".")
                and not p.name.endswith(".tmp")
            )
            if folder.is_dir()
            else []
        )
        return [meta, *state]

    def router_metrics_path(self) -> Path:
        return self.path("router", "metrics.json")

    def write_router_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.router_metrics_path(), metrics)

    def router_metrics(self) -> dict[str, Any]:
        path = self.router_metrics_path()
        return json.loads(path.read_text()) if path.exists() else {}

    def write_test_predictions(self, rows: list[dict[str, Any]]) -> None:
        write_jsonl(self.path("router", "test_predictions.jsonl"), rows)

    def test_predictions(self) -> list[dict[str, Any]]:
        """The router's and the oracle's choice per test calibration prompt."""
        path = self.path("router", "test_predictions.jsonl")
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: missing (a run from an earlier persyn, or a damaged run directory); "
                "rerun `persyn run CONFIG` to retrain the router"
            )
        return read_jsonl(path)

    def write_router_eval(self, result: dict[str, Any], markdown: str) -> Path:
        atomic_write_json(self.path("router", "eval.json"), result)
        atomic_write_text(self.path("router", "eval.md"), markdown)
        return self.path("router", "eval.md")

    def active(self) -> ActiveFiles:
        """Active calibration's rounds, rewards and routers (`routing.uncovered`)."""
        return ActiveFiles(self.path("active"))

    # -- routes and dataset -------------------------------------------------------------
    def write_routes(self, rows: list[dict[str, Any]]) -> None:
        """Per routed prompt: `prompt_id`, `teacher` and `router_fp`, the fingerprint under
        which its scores are in the router score log (stored once there: at 60K prompts a
        copy here was 25 MB)."""
        write_jsonl(self.routes_path(), rows)

    def routes_path(self) -> Path:
        return self.path("routes.jsonl")

    def routes(self, with_scores: bool = False) -> list[dict[str, Any]]:
        """Per routed prompt: `prompt_id`, `teacher`; `with_scores` adds `router_scores`
        {teacher: score} from the router score log (runs routed before the log was the only
        copy have them in the rows already)."""
        rows = read_jsonl(self.routes_path())
        if not with_scores or all("router_scores" in r for r in rows):
            return rows
        log = self.router_score_log()
        teachers = self.router_checkpoint().meta()["teachers"]
        for r in rows:
            if "router_scores" not in r:
                scores = log.get((r["prompt_id"], r["router_fp"]))["scores"]  # type: ignore[index]
                r["router_scores"] = {
                    t: round(float(v), 5) for t, v in zip(teachers, scores, strict=True)
                }
        return rows

    def write_dataset(self, rows: Iterable[dict[str, Any]], teachers: list[str]) -> None:
        """`dataset.jsonl` and the `datasets` folder `dataset/` (schema: `dataset_features`
        of the pool's `teachers`), replaced atomically. Rows stream through to disk:
        neither file is ever whole in memory (100K rows)."""
        import datasets
        import pyarrow as pa

        n_rows = write_jsonl(self.path("dataset.jsonl"), rows)
        out_dir, tmp_dir = self.dataset_dir(), self.path(".dataset.tmp")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir()
        rows_file = tmp_dir / "rows.arrow"  # an Arrow stream `Dataset.from_file` maps
        features = dataset_features(teachers)
        schema = features.arrow_schema
        with pa.OSFile(str(rows_file), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
            written = iter_jsonl(self.dataset_path())
            while batch := list(islice(written, 1000)):
                out.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
        table = datasets.Dataset.from_file(str(rows_file))
        # One shard when empty: `save_to_disk` writes none otherwise, and the folder would
        # not load.
        table.save_to_disk(str(tmp_dir / "dataset"), num_shards=1 if n_rows == 0 else None)
        del table
        shutil.rmtree(out_dir, ignore_errors=True)
        (tmp_dir / "dataset").rename(out_dir)
        shutil.rmtree(tmp_dir)

    def dataset(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path("dataset.jsonl"))

    def dataset_path(self) -> Path:
        return self.path("dataset.jsonl")

    def dataset_dir(self) -> Path:
        return self.path("dataset")

    def dataset_is_whole(self) -> bool:
        """Whether `dataset/` is a complete `datasets` folder (`save_to_disk` finished)."""
        return (self.dataset_dir() / "state.json").exists()

    def card_path(self) -> Path:
        return self.path("dataset", "README.md")

    def failed_path(self) -> Path:
        return self.path("failed.jsonl")

    def write_failed(self, rows: list[dict[str, Any]]) -> None:
        write_jsonl(self.failed_path(), rows)

    def summary_path(self) -> Path:
        return self.path("summary.json")

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path(), summary)

    def write_demo_summary(self, summary: dict[str, Any]) -> None:
        """`persyn demo`'s copy of the summary, kept apart from a later run's."""
        atomic_write_json(self.path("demo_summary.json"), summary)

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path().read_text())

    def plan_path(self) -> Path:
        """`persyn plan`'s estimates of what the run costs."""
        return self.path("plan.json")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.path("manifest.json"), manifest)

    # -- folders of the commands run after the pipeline -------------------------------
    def report_dir(self) -> Path:
        return self.path("report")

    # These two stay relative to the run directory as given: they name the trained models.
    def student_dir(self) -> Path:
        """Where `persyn train` trains the student unless told otherwise."""
        return self.root / "student"

    def experiment_dir(self) -> Path:
        """Where `persyn experiment` writes unless `experiment.output_dir` says otherwise."""
        return self.root / "experiment"

    def tune_files(self) -> TuneFiles:
        """Where `persyn tune` (the `tune` stage) writes its pilot students and choice."""
        return TuneFiles(self.path("tune"))

    def tune_choice(self) -> dict[str, Any] | None:
        """The reward setting `persyn tune` chose and why (`choice.json`), or None."""
        path = self.tune_files().choice
        return json.loads(path.read_text()) if path.is_file() else None

    def row_logs(self) -> list[RowLogSpec]:
        """Every row-shaped artifact, for `persyn inspect`."""

        def has_error(row: dict[str, Any]) -> bool:
            return row.get("error") is not None

        logs = [RowLogSpec("prompts", self.prompts_path(), ("id",), _never)]
        logs += [
            RowLogSpec(f"generations/{p.stem}", p, ("prompt_id", "fp"), has_error)
            for p in self.generation_files()
        ]
        logs += [
            RowLogSpec(f"scores/{s}", self.score_path(s), ("prompt_id", "teacher", "fp"), has_error)
            for s in SCORE_SIGNALS
        ]
        return [
            *logs,
            RowLogSpec(
                "rewards", self.rewards_path(), ("prompt_id",), lambda r: r["oracle"] is None
            ),
            RowLogSpec("routes", self.routes_path(), ("prompt_id",), _never),
            RowLogSpec("dataset", self.dataset_path(), ("id",), _never),
            RowLogSpec("failed", self.failed_path(), ("prompt_id",), lambda _r: True),
        ]

    def folders(self) -> list[tuple[str, Path]]:
        """(name, path) of the non-row artifacts, for `persyn inspect`."""
        return [
            ("router", self.router_dir()),
            ("dataset (datasets)", self.dataset_dir()),
            ("dataset card", self.card_path()),
            ("summary", self.summary_path()),
            ("report", ReportFiles(self.report_dir()).page),
        ]


def _never(_row: dict[str, Any]) -> bool:
    return False

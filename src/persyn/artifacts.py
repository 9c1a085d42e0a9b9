"""Typed access to every artifact of a run directory.

Stages, baselines, the report, the experiment and the benchmarks read and write the run
directory only through `RunArtifacts`: file names and row shapes live here and nowhere
else. Layout (relative to the run directory):

    config.yaml                    the resolved config of the last run
    prompts.jsonl                  normalised prompts (id, messages, kind, reference, meta)
    calibration.json               calibration ids, the router's train/val split, routed ids
    imported.jsonl                 calibration answers read from `calibration.source`
    generations/<teacher>.jsonl    row log: one row per (prompt, teacher config)
    scores/<signal>.jsonl          row logs: learnability per (prompt, teacher, student),
                                   quality per (prompt, teacher, quality config)
    rewards.jsonl, rewards_meta.json   per calibration prompt: raw and combined rewards, oracle
    rewards_alpha<a>.jsonl, alpha_sweep.{json,md}   `persyn score --alpha` re-mixes
    router/                        checkpoint, metrics.json, test_predictions.jsonl,
                                   scores.jsonl (row log of router scores), eval.{json,md}
    routes.jsonl                   per routed prompt: teacher, key of its router scores
    dataset.jsonl, dataset/        the personalised dataset (JSONL, `datasets` folder, card)
    failed.jsonl, summary.json     prompts without a row and why; counts, shares, costs
    stages/<stage>.json, manifest.json   completion markers; section hashes per stage
    .lock                          the lock of the process working here (`RunStore.lock`)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from persyn.config import RunConfig, load_config
from persyn.method import mark_failed
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

SCORE_SIGNALS = ("learnability", "quality")


@dataclass
class Split:
    """Which prompts calibrate (every teacher answers) and which are routed."""

    calibration: list[str]
    router_train: list[str]
    router_val: list[str]
    routed: list[str]
    # hash of the calibration settings the draw used (none in runs before it was recorded)
    drawn_with: str | None = None
    # calibration prompts neither router training nor model selection sees
    router_test: list[str] = field(default_factory=list)


@dataclass
class RewardTable:
    """Per calibration prompt and teacher: raw learnability and quality, the combined
    reward (NaN where a teacher has no usable response) and the oracle's teacher; `failed`
    marks the teachers whose answer failed (an error; see `stages.score.failed_answers`),
    as opposed to a prompt not asked or a score that could not be computed."""

    ids: list[str]
    teachers: list[str]
    learnability: np.ndarray
    quality: np.ndarray
    reward: np.ndarray
    oracle: list[str | None]
    failed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))

    def __post_init__(self) -> None:
        if self.failed.shape != self.reward.shape:  # a table from before failures were kept
            self.failed = np.zeros(self.reward.shape, dtype=bool)

    @property
    def routing_reward(self) -> np.ndarray:
        """The combined reward with failed answers at -inf: what routers train on and are
        measured against (`persyn.method.mark_failed`)."""
        return mark_failed(self.reward, self.failed)

    def by_teacher(self, row: int) -> dict[str, dict[str, float | None]]:
        """Row `row` as {"learnability"|"quality"|"reward": {teacher: value or None}}."""
        return {
            key: dict(zip(self.teachers, _nan_list(matrix[row]), strict=True))
            for key, matrix in (
                ("learnability", self.learnability),
                ("quality", self.quality),
                ("reward", self.reward),
            )
        }

    def subset(self, ids: list[str]) -> RewardTable:
        row = {pid: i for i, pid in enumerate(self.ids)}
        rows = [row[pid] for pid in ids]
        return RewardTable(
            list(ids),
            self.teachers,
            self.learnability[rows],
            self.quality[rows],
            self.reward[rows],
            [self.oracle[i] for i in rows],
            self.failed[rows],
        )


@dataclass
class RowLogSpec:
    """A row-shaped artifact: where, what identifies a row, and which rows failed."""

    name: str
    path: Path
    key_fields: tuple[str, ...]
    failed: Callable[[dict[str, Any]], bool]


def dataset_row(
    prompt: Prompt,
    response: str,
    teacher: str,
    selected_by: str,
    router_scores: dict[str, float] | None = None,
    rewards: dict[str, dict[str, float | None]] | None = None,
) -> dict[str, Any]:
    """One row of a distillation dataset (the run's own and every baseline's)."""
    return {
        "id": prompt.id,
        "messages": [*prompt.messages, {"role": "assistant", "content": response}],
        "teacher": teacher,
        "selected_by": selected_by,
        "kind": prompt.kind,
        "reference": prompt.reference,
        "router_scores": router_scores,
        "rewards": rewards,
    }


def _nan_list(a: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in a]


def _matrix(rows: list[dict[str, Any]], key: str, width: int) -> np.ndarray:
    values = [[np.nan if v is None else v for v in r[key]] for r in rows]
    return np.array(values, dtype=float).reshape(len(rows), width)


class RunArtifacts(RunStore):
    """The run directory's artifacts by name, each with a reader and a writer."""

    # -- config and prompts -------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        # Redacted: a run directory gets copied and shared; keys pasted into a URL or
        # `extra_body` must not travel with it.
        text = yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)
        atomic_write_text(self.path("config.yaml"), text)

    def config(self) -> RunConfig:
        return load_config(self.path("config.yaml"))

    def prompts(self) -> list[Prompt]:
        return [Prompt.from_row(r) for r in read_jsonl(self.path("prompts.jsonl"))]

    def write_prompts(self, prompts: Iterable[Prompt]) -> None:
        write_jsonl(self.path("prompts.jsonl"), (p.to_row() for p in prompts))

    def split(self) -> Split:
        return Split(**json.loads(self.path("calibration.json").read_text()))

    def write_split(self, split: Split) -> None:
        atomic_write_json(self.path("calibration.json"), split.__dict__)

    def write_imported(self, rows: list[dict[str, Any]]) -> None:
        """The calibration answers `prepare` read from `calibration.source` (one row per
        answer: prompt_id, model, teacher, text, raw_score, score, completion_tokens,
        source_row); `calibrate` copies them into the generation logs."""
        write_jsonl(self.path("imported.jsonl"), rows)

    def imported(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path("imported.jsonl"))

    # -- row logs -----------------------------------------------------------------------
    def generation_log(self, teacher: str) -> RowLog:
        return RowLog(self.path("generations", f"{teacher}.jsonl"), ("prompt_id", "fp"))

    def generation_files(self) -> list[Path]:
        return sorted(self.path("generations").glob("*.jsonl"))

    def score_log(self, signal: str) -> RowLog:
        """`learnability` or `quality` scores, keyed by prompt, teacher and fingerprint."""
        return RowLog(self.score_path(signal), ("prompt_id", "teacher", "fp"))

    def score_path(self, signal: str) -> Path:
        return self.path("scores", f"{signal}.jsonl")

    def router_score_log(self) -> RowLog:
        return RowLog(self.path("router", "scores.jsonl"), ("prompt_id", "fp"))

    # -- rewards ------------------------------------------------------------------------
    def rewards_path(self, alpha: float | None = None) -> Path:
        return self.path("rewards.jsonl" if alpha is None else f"rewards_alpha{alpha:g}.jsonl")

    def write_rewards(self, table: RewardTable, alpha: float | None = None) -> None:
        """`rewards.jsonl` (the run's alpha) or `rewards_alpha<a>.jsonl` (a sweep)."""
        rows = [
            {
                "prompt_id": pid,
                "learnability": _nan_list(table.learnability[i]),
                "quality": _nan_list(table.quality[i]),
                "reward": _nan_list(table.reward[i]),
                "oracle": table.oracle[i],
                "failed": [t for t, f in zip(table.teachers, table.failed[i], strict=True) if f],
            }
            for i, pid in enumerate(table.ids)
        ]
        write_jsonl(self.rewards_path(alpha), rows)

    def write_rewards_meta(self, teachers: list[str], alpha: float, normalization: str) -> None:
        meta = {"teachers": teachers, "alpha": alpha, "normalization": normalization}
        atomic_write_json(self.path("rewards_meta.json"), meta)

    def reward_teachers(self) -> list[str]:
        """The teachers (columns) of `rewards.jsonl`, in order."""
        return json.loads(self.path("rewards_meta.json").read_text())["teachers"]

    def rewards(self, alpha: float | None = None) -> RewardTable:
        teachers = self.reward_teachers()
        rows = read_jsonl(self.rewards_path(alpha))
        return RewardTable(
            [r["prompt_id"] for r in rows],
            teachers,
            _matrix(rows, "learnability", len(teachers)),
            _matrix(rows, "quality", len(teachers)),
            _matrix(rows, "reward", len(teachers)),
            [r["oracle"] for r in rows],
            np.array(
                [[t in r.get("failed", ()) for t in teachers] for r in rows], dtype=bool
            ).reshape(len(rows), len(teachers)),
        )

    def write_alpha_sweep(self, sweep: dict[str, Any], table: str) -> None:
        atomic_write_json(self.path("alpha_sweep.json"), sweep)
        atomic_write_text(self.alpha_sweep_table(), table)

    def alpha_sweep_table(self) -> Path:
        return self.path("alpha_sweep.md")

    # -- router -------------------------------------------------------------------------
    def router_dir(self) -> Path:
        return self.path("router")

    def router_checkpoint_files(self) -> list[Path]:
        """The router checkpoint: `router.json` and the state files the router wrote beside
        it, not the scores, metrics and evaluations kept in the same folder."""
        folder = self.router_dir()
        others = {"scores.jsonl", "metrics.json", "test_predictions.jsonl", "eval.json", "eval.md"}
        state = (
            sorted(
                p
                for p in folder.iterdir()
                if p.is_file()
                and p.name not in {*others, "router.json"}
                and not p.name.startswith(".")
                and not p.name.endswith(".tmp")
            )
            if folder.is_dir()
            else []
        )
        return [folder / "router.json", *state]

    def write_router_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.path("router", "metrics.json"), metrics)

    def router_metrics(self) -> dict[str, Any]:
        path = self.path("router", "metrics.json")
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

    # -- routes and dataset -------------------------------------------------------------
    def write_routes(self, rows: list[dict[str, Any]]) -> None:
        """Per routed prompt: `prompt_id`, `teacher` and `router_fp`, the fingerprint under
        which its scores are in the router score log (stored once there: at 60K prompts a
        copy here was 25 MB)."""
        write_jsonl(self.path("routes.jsonl"), rows)

    def routes(self, with_scores: bool = False) -> list[dict[str, Any]]:
        """Per routed prompt: `prompt_id`, `teacher`; `with_scores` adds `router_scores`
        {teacher: score} from the router score log (runs routed before the log was the only
        copy have them in the rows already)."""
        rows = read_jsonl(self.path("routes.jsonl"))
        if not with_scores or all("router_scores" in r for r in rows):
            return rows
        log = self.router_score_log()
        teachers = json.loads(self.path("router", "router.json").read_text())["teachers"]
        for r in rows:
            if "router_scores" not in r:
                scores = log.get((r["prompt_id"], r["router_fp"]))["scores"]  # type: ignore[index]
                r["router_scores"] = {
                    t: round(float(v), 5) for t, v in zip(teachers, scores, strict=True)
                }
        return rows

    def write_dataset(self, rows: Iterable[dict[str, Any]]) -> None:
        """`dataset.jsonl` and the `datasets` folder `dataset/`, replaced atomically. Rows
        stream through to disk: neither file is ever whole in memory (100K rows)."""
        import datasets
        import pyarrow as pa

        n_rows = write_jsonl(self.path("dataset.jsonl"), rows)
        out_dir, tmp_dir = self.dataset_dir(), self.path(".dataset.tmp")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir()
        rows_file = tmp_dir / "rows.arrow"  # an Arrow stream `Dataset.from_file` maps
        text = datasets.Value("string")
        columns = ("teacher", "selected_by", "kind", "reference", "router_scores", "rewards")
        features = datasets.Features(
            {
                "id": text,
                "messages": [{"role": text, "content": text}],
                **dict.fromkeys(columns, text),
            }
        )
        schema = features.arrow_schema
        with pa.OSFile(str(rows_file), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
            hf_rows = map(_hf_row, iter_jsonl(self.dataset_path()))
            while batch := list(islice(hf_rows, 1000)):
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

    def card_path(self) -> Path:
        return self.path("dataset", "README.md")

    def write_failed(self, rows: list[dict[str, Any]]) -> None:
        write_jsonl(self.path("failed.jsonl"), rows)

    def write_summary(self, summary: dict[str, Any], name: str = "summary.json") -> None:
        atomic_write_json(self.path(name), summary)

    def summary(self) -> dict[str, Any]:
        return json.loads(self.path("summary.json").read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.path("manifest.json"), manifest)

    def report_dir(self) -> Path:
        return self.path("report")

    def row_logs(self) -> list[RowLogSpec]:
        """Every row-shaped artifact, for `persyn inspect`."""

        def has_error(row: dict[str, Any]) -> bool:
            return row.get("error") is not None

        logs = [RowLogSpec("prompts", self.path("prompts.jsonl"), ("id",), _never)]
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
            RowLogSpec("routes", self.path("routes.jsonl"), ("prompt_id",), _never),
            RowLogSpec("dataset", self.dataset_path(), ("id",), _never),
            RowLogSpec("failed", self.path("failed.jsonl"), ("prompt_id",), lambda _r: True),
        ]

    def folders(self) -> list[tuple[str, Path]]:
        """(name, path) of the non-row artifacts, for `persyn inspect`."""
        return [
            ("router", self.router_dir()),
            ("dataset (datasets)", self.dataset_dir()),
            ("dataset card", self.card_path()),
            ("summary", self.path("summary.json")),
            ("report", self.path("report", "report.html")),
        ]


def _never(_row: dict[str, Any]) -> bool:
    return False


def _json_or_none(x: Any) -> str | None:
    return None if x is None else json.dumps(x, sort_keys=True)


def _hf_row(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset row for the `datasets` folder: the nested per-teacher dicts JSON-encoded
    (their keys differ per pool; Arrow wants one schema)."""
    return {
        **row,
        "router_scores": _json_or_none(row["router_scores"]),
        "rewards": _json_or_none(row["rewards"]),
    }

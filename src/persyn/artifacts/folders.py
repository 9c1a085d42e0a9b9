"""The folders persyn writes besides the stages' artifacts: a router checkpoint, a student
training folder, a student evaluation, an experiment and a report; each file by name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persyn.artifacts.rows import RewardTable
from persyn.store import atomic_write_json, read_jsonl, write_jsonl


@dataclass(frozen=True)
class NoveltyReference:
    """What routed prompts' novelty is measured against: the router-train calibration
    prompts' embeddings in the router's encoder space (float16), the held-out calibration
    prompts' own novelty, the threshold calibrated on it and the neighbours averaged."""

    embeddings: np.ndarray  # [prompts, dim]
    heldout_novelty: np.ndarray  # [held-out prompts]
    threshold: float | None
    k: int


class RouterCheckpoint:
    """A router checkpoint: `router.json` (the router's kind, teachers and config; written
    last, it marks a whole checkpoint), the state files the router writes beside it and
    `novelty.npz` (`NoveltyReference`; absent for routers without an encoder space)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta_path = folder / "router.json"
        self.novelty_path = folder / "novelty.npz"

    def write_novelty(self, reference: NoveltyReference | None) -> None:
        """Write `reference` (None: remove an earlier router's)."""
        if reference is None:
            self.novelty_path.unlink(missing_ok=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".novelty.tmp.npz"
        threshold = np.nan if reference.threshold is None else reference.threshold
        np.savez(
            tmp,
            embeddings=reference.embeddings.astype(np.float16),
            heldout_novelty=reference.heldout_novelty.astype(np.float32),
            threshold=np.float64(threshold),
            k=np.int64(reference.k),
        )
        tmp.replace(self.novelty_path)

    def novelty(self) -> NoveltyReference | None:
        """The stored reference (None when the router has none)."""
        if not self.novelty_path.is_file():
            return None
        with np.load(self.novelty_path) as data:
            threshold = float(data["threshold"])
            return NoveltyReference(
                embeddings=data["embeddings"].astype(np.float32),
                heldout_novelty=data["heldout_novelty"].astype(float),
                threshold=None if np.isnan(threshold) else threshold,
                k=int(data["k"]),
            )

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.meta_path, meta)


class ActiveFiles:
    """Active calibration (`routing.uncovered: calibrate`, `persyn.stages.active`):
    `rounds.json` (the config key it ran under and each round's record: prompts added,
    router fingerprint, coverage before and after), `rewards.jsonl` (the reward table of
    the calibration prompts and those added, `teachers` its columns) and `round-<r>/`, the
    router checkpoint each round trained."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rounds_path = folder / "rounds.json"
        self.rewards_path = folder / "rewards.jsonl"

    def router_dir(self, round_index: int) -> Path:
        return self.folder / f"round-{round_index}"

    def router_checkpoint(self, round_index: int) -> RouterCheckpoint:
        return RouterCheckpoint(self.router_dir(round_index))

    def rounds(self) -> dict[str, Any] | None:
        """The record (None: no active calibration ran here)."""
        if not self.rounds_path.is_file():
            return None
        return json.loads(self.rounds_path.read_text())

    def added(self) -> list[str]:
        """The prompts active calibration added, round by round (none without a record)."""
        record = self.rounds()
        return [pid for r in (record or {}).get("rounds", []) for pid in r["added"]]

    def write_rounds(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.rounds_path, record)

    def clear(self) -> None:
        """Forget an earlier active calibration (another policy routes now); its rows stay
        in the generation and score logs."""
        self.rounds_path.unlink(missing_ok=True)
        self.rewards_path.unlink(missing_ok=True)

    def write_rewards(self, table: RewardTable) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.rewards_path, table.to_rows())

    def rewards(self, teachers: list[str]) -> RewardTable:
        return RewardTable.from_rows(read_jsonl(self.rewards_path), teachers)


class StudentFiles:
    """A student training folder (`persyn train`): TRL's checkpoints, `persyn_inputs.json`
    (the fingerprint of the data and settings trained on), `adapter/` (LoRA) and `final/`,
    the trained model with its `persyn_training.json` (`record`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.inputs = folder / "persyn_inputs.json"
        self.adapter = folder / "adapter"
        self.final = folder / "final"

    @staticmethod
    def record(checkpoint: str | Path) -> Path:
        """What `persyn train` records in a checkpoint it finished (data, loss, runtime)."""
        return Path(checkpoint) / "persyn_training.json"


class StudentEvalFiles:
    """A student evaluation (`persyn evaluate`): answers, per-prompt scores, metrics."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.answers = folder / "answers.jsonl"
        self.scores = folder / "scores.jsonl"
        self.metrics = folder / "metrics.json"
        # the evaluated student's training record (`persyn experiment`): with the metrics it
        # stands in for a checkpoint that is gone (another session, another machine)
        self.training = folder / "training.json"

    @staticmethod
    def beside(checkpoint: Path) -> Path:
        """Where `persyn evaluate` writes a checkpoint's evaluation by default."""
        return checkpoint / "eval"


class ExperimentFiles:
    """`persyn experiment`'s output folder: the datasets, the students trained on them and
    their evaluations (each under a fingerprint of what it depends on), and the results."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.per_prompt = folder / "per_prompt.json"
        self.results_md = folder / "results.md"
        self.results_csv = folder / "results.csv"
        self.results_png = folder / "results.png"

    def dataset(self, name: str) -> Path:
        return self.folder / "datasets" / f"{name}.jsonl"

    def student(self, key: str) -> Path:
        return self.folder / "students" / key

    def evaluation(self, key: str) -> StudentEvalFiles:
        return StudentEvalFiles(self.folder / "eval" / key)


class ReportFiles:
    """`persyn report`'s folder: `report.html` and one PNG per plot."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.page = folder / "report.html"

    def plot(self, key: str) -> Path:
        return self.folder / f"{key}.png"


class TuneFiles(ExperimentFiles):
    """`persyn tune`'s folder (`tune/` in the run directory): a pilot dataset per reward
    setting, the pilot students and their evaluations (as `ExperimentFiles` stores them),
    the table (`tune.md`, `tune.csv`, `tune.json`), the plot (`tune.png`) and the choice
    (`choice.json`: the setting the run uses under `rewards.alpha: auto`, and why)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.table_md = folder / "tune.md"
        self.table_csv = folder / "tune.csv"
        self.table_json = folder / "tune.json"
        self.plot = folder / "tune.png"
        self.choice = folder / "choice.json"

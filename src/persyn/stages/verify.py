"""What each stage's finished outputs must look like, checked on every rerun.

A stage marker says a stage finished for this config; it does not say its files are still
whole. A torn or edited row log, a deleted checkpoint or split, failed rows worth another
try: `run_stage` asks the stage's `verify` before trusting a marker, and redoes the stage
when something is missing. `Outputs.digest` is a hash of what later stages read; it is
stored in the marker, so a change since the stage finished is noticed, and a later stage
records the digests it was computed from (`inputs`), so it is redone only when its inputs
really changed (a stage redone with the same results leaves everything after it alone).

Kept cheap, since a rerun of a finished 60K-prompt run checks every stage: whole-file
outputs are hashed as bytes (files over 64 MiB, i.e. model weights, by size and
modification time). Row logs are parsed only when they changed: the marker records each
log's size and the hash of those bytes (`files`), and as logs only grow by appends, the
same leading bytes mean the stage's rows are as it left them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persyn.stages.common import learnability_fingerprint, teacher_fingerprint
from persyn.stages.fallback import GenerationRows, routed_chains
from persyn.stages.score import plan_scores
from persyn.teachers.base import can_generate

if TYPE_CHECKING:
    from persyn.run import Run

Marker = dict[str, Any] | None


@dataclass
class Outputs:
    """A stage's outputs as found: their digest, and why the stage must be redone."""

    digest: str
    damaged: str | None = None  # a file missing or unreadable (a warning: it was lost)
    retry: str | None = None  # failed rows to try again (expected after errors)
    # row logs as the stage left them: relative path -> [size, sha256 of those bytes]
    files: dict[str, list[Any]] = field(default_factory=dict)


_BIG_FILE = 64 << 20


def _hash_files(paths: Iterable[Path]) -> tuple[str, list[Path]]:
    """sha256 over the files' bytes, and the files that are missing."""
    digest, missing = hashlib.sha256(), []
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        try:
            stat = path.stat()
            if stat.st_size > _BIG_FILE:  # weights: hashing gigabytes on every rerun is slow
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            else:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        except FileNotFoundError:
            missing.append(path)
    return digest.hexdigest()[:16], missing


def _files(run: Run, paths: list[Path], extra: Iterable[Path] = ()) -> Outputs:
    """Outputs that are whole files: all of `paths` must exist; `extra` is hashed if there."""
    digest, missing = _hash_files([*paths, *(p for p in extra if p.exists())])
    if missing:
        names = ", ".join(run.store.name(p) for p in missing)
        return Outputs(digest, damaged=f"{names} missing")
    return Outputs(digest)


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _head_hash(path: Path, size: int) -> str | None:
    """sha256 of the first `size` bytes; None when the file is shorter or absent."""
    try:
        with path.open("rb") as f:
            head = f.read(size)
    except FileNotFoundError:
        return None
    return hashlib.sha256(head).hexdigest() if len(head) == size else None


def _log_state(run: Run, paths: Iterable[Path]) -> dict[str, list[Any]]:
    state = {}
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            state[run.store.name(path)] = [len(data), hashlib.sha256(data).hexdigest()]
    return state


def _as_left(run: Run, marker: Marker) -> Outputs | None:
    """The outputs the marker recorded, when every row log it lists still starts with the
    bytes the stage left (later appends are fine); None: check the rows themselves."""
    files = (marker or {}).get("files")
    if not files or "outputs" not in marker:  # type: ignore[operator]
        return None
    for name, (size, digest) in files.items():
        if _head_hash(run.store.path(name), size) != digest:
            return None
    return Outputs(marker["outputs"], retry=marker.get("retry"), files=files)  # type: ignore[index]


def verify_prepare(run: Run, marker: Marker = None) -> Outputs:
    store = run.store
    # imported.jsonl: the answers an imported calibration copies in (`calibration.source`)
    out = _files(run, [store.prompts_path(), store.split_path()], [store.imported_path()])
    if out.damaged is None:
        try:
            store.split()
        except (ValueError, TypeError):  # not JSON, or not the split's fields
            out.damaged = f"{store.split_path().name} unreadable"
    return out


def _generations(run: Run, pairs: dict[str, list[str]], required: set[str]) -> Outputs:
    """Generation rows of `pairs` {teacher: prompt ids} (calibration). A failed row is
    retried; a missing row is lost work when the teacher is `required` to answer (imported
    data may have no answer to give). The prompt text behind a row is not checked here: a
    changed prompts file changes every stage's fingerprint, and the stages check it when
    they run."""
    digest = hashlib.sha256()
    failed, lost = 0, 0
    for t in run.cfg.teachers:
        ids = pairs.get(t.name, [])
        if not ids:
            continue
        rowlog, fp = run.store.generation_log(t.name), teacher_fingerprint(t)
        for pid in ids:
            row = rowlog.get((pid, fp))
            if row is not None and row["error"] is None:
                digest.update(json.dumps([t.name, pid, row["text"]]).encode())
            elif row is not None:
                failed += 1
            elif t.name in required:
                lost += 1
    out = Outputs(digest.hexdigest()[:16])
    if lost:
        out.damaged = f"{lost} generation rows lost since it finished"
    if failed:
        out.retry = f"retrying {failed} failed generation rows"
    out.files = _log_state(run, run.store.generation_files())
    return out


def verify_calibrate(run: Run, marker: Marker = None) -> Outputs:
    if (found := _as_left(run, marker)) is not None:
        return found
    split = run.store.split()
    source = run.cfg.calibration.source
    # Imported calibration: teachers generate only with `fill_missing`; a cell the data
    # has no answer for stays empty by design.
    generating = source is None or source.fill_missing
    required = {t.name for t in run.cfg.teachers if generating and can_generate(t)}
    pairs = {t.name: split.calibration for t in run.cfg.teachers}
    return _generations(run, pairs, required)


def verify_tune(run: Run, marker: Marker = None) -> Outputs:
    """The choice later stages read; nothing with an explicit alpha (the stage did nothing)."""
    if not run.cfg.rewards.tuned:
        return Outputs(digest="")
    return _files(run, [run.store.tune_files().choice])


def verify_score(run: Run, marker: Marker = None) -> Outputs:
    store = run.store
    out = _files(run, [store.rewards_path(), store.rewards_meta_path()])
    if out.damaged is not None:
        return out
    # Markers from before persyn recorded the key are trusted on this count.
    scored_under = (marker or {}).get("learnability_fp")
    if scored_under is not None and scored_under != learnability_fingerprint(run.cfg):
        out.retry = "the student's precision or chat template changed since it scored"
        return out
    if (found := _as_left(run, marker)) is not None and found.digest == out.digest:
        return found
    plan = plan_scores(run, store.split().calibration)
    todo = len(plan.todo_l) + len(plan.todo_q)
    if todo:
        out.retry = f"{todo} learnability or quality scores missing or failed"
    out.files = _log_state(run, [store.score_path(s) for s in ("learnability", "quality")])
    return out


def verify_train_router(run: Run, marker: Marker = None) -> Outputs:
    store = run.store
    checkpoint = store.router_checkpoint()
    out = _files(run, [*store.router_checkpoint_files(), store.router_metrics_path()])
    if out.damaged is None:
        try:
            teachers = checkpoint.meta()["teachers"]
        except (OSError, ValueError, KeyError, TypeError):
            meta = run.store.name(checkpoint.meta_path)
            return Outputs(out.digest, damaged=f"{meta} missing or unreadable")
        if teachers != run.cfg.teacher_names:
            folder = run.store.name(checkpoint.folder)
            out.damaged = f"{folder}/ holds a router for teachers {teachers}"
    return out


def verify_route(run: Run, marker: Marker = None) -> Outputs:
    path = run.store.routes_path()
    out = _files(run, [path])
    # less the prompts active calibration added (`routing.uncovered: calibrate`)
    routed = len(run.store.split().routed) - len(run.store.active().added())
    if out.damaged is None and _lines(path) != routed:
        out.damaged = f"{path.name} does not have one row per routed prompt"
    return out


def verify_generate(run: Run, marker: Marker = None) -> Outputs:
    """The answer each routed prompt uses: the first good one of its fallback chain. A
    prompt whose whole chain failed is retried; one whose next teacher has no row (lost
    since the stage finished) makes the stage redo."""
    if (found := _as_left(run, marker)) is not None:
        return found
    rows = GenerationRows(run)
    chains = routed_chains(run, rows)
    digest = hashlib.sha256()
    # Hashed teacher by teacher, as before fallback (a run without one keeps its digest).
    pool = {t: i for i, t in enumerate(run.cfg.teacher_names)}
    answered = [(pid, c.used, c.failed) for pid, c in chains.items() if c.used is not None]
    for pid, t, fallback_from in sorted(answered, key=lambda a: pool[a[1]]):
        text = rows.get(t, pid)["text"]  # type: ignore[index]
        fallback = [fallback_from] if fallback_from else []
        digest.update(json.dumps([t, pid, text, *fallback]).encode())
    out = Outputs(digest.hexdigest()[:16])
    lost = sum(c.used is None and c.waiting is not None for c in chains.values())
    failed = sum(c.used is None and c.waiting is None for c in chains.values())
    if lost:
        out.damaged = f"{lost} generation rows lost since it finished"
    if failed:
        out.retry = f"retrying {failed} prompts whose every teacher's answer failed"
    out.files = _log_state(run, run.store.generation_files())
    return out


def verify_export(run: Run, marker: Marker = None) -> Outputs:
    store = run.store
    dataset, failed = store.dataset_path(), store.failed_path()
    # The digest leaves out the card and the summary: a user may edit the card before
    # publishing, and that must not make the next rerun overwrite it.
    out = _files(run, [dataset, failed])
    absent = [p.name for p in (store.summary_path(), store.card_path()) if not p.exists()]
    if absent:
        out.damaged = f"{', '.join(absent)} missing"
    if out.damaged is None:
        rows = _lines(dataset) + _lines(failed)
        if rows != _lines(store.prompts_path()):
            out.damaged = f"{dataset.name} and {failed.name} hold {rows} rows, not one per prompt"
        elif not store.dataset_is_whole():
            folder = run.store.name(store.dataset_dir())
            out.damaged = f"{folder}/ (the `datasets` folder) is incomplete"
    return out

"""The run directory: atomic artifacts, append-only row logs, stage markers.

Layout (all paths relative to `run_dir`):

    config.yaml               the resolved config of the last run
    prompts.jsonl             normalised prompts (id, messages, kind, reference, meta)
    calibration.json          calibration prompt ids and the router's train/val split
    generations/<teacher>.jsonl   one row per (prompt, teacher config), appended as done
    scores/learnability.jsonl     one row per (prompt, teacher, student)
    scores/quality.jsonl          one row per (prompt, teacher, quality config)
    rewards.jsonl             per calibration prompt: raw, normalised, combined, oracle
    router/                   router checkpoint and metrics
    routes.jsonl              per routed prompt: teacher, key of its router scores
    dataset.jsonl, dataset/   the personalised dataset (JSONL and `datasets` folder)
    summary.json              counts, generations used vs Generate-then-Select
    stages/<stage>.json       completion marker: input fingerprint and stats
    .lock                     held (flock) by the one process working here; its PID

Row logs are keyed: a rerun reads the rows already written and only computes the missing
ones, so a killed job loses at most the rows in flight. A torn last line (the process was
killed while writing it) is ignored; a damaged line elsewhere is dropped with a warning,
and its row recomputed. Each row carries a checksum of its content (`_sum`): a row edited
by hand, or one whose values cannot be right (`ImpossibleRow`), is dropped the same way,
so a rerun recomputes it instead of trusting it. Rows written before the checksum existed
have none and are read as they are.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

# mkstemp creates files readable by the owner only; artifacts get the mode any new file
# would get (0666 less the umask), so a shared run directory stays readable. Read once:
# os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A text file that replaces `path` only when the block ends without error: written to
    a temporary file in the same folder, fsynced, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # Keep the mode of the file being replaced (a user may have changed it).
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` atomically, one at a time (a 100K-row dataset is never one string)."""
    n = 0
    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL file, read a line at a time."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {i + 1}: not valid JSON") from None


# The field of a row log's line holding the checksum of the row's other fields.
CHECKSUM = "_sum"


class ImpossibleRow(ValueError):
    """A row whose values cannot be right (a positive mean log-likelihood, a quality outside
    [0, 1], ...); the message names the field. Raised by a row log's `check`."""


def row_checksum(row: dict[str, Any]) -> str:
    """Hash of a row's canonical JSON (sorted keys): what the row said when it was written."""
    canonical = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class RowLog:
    """Append-only JSONL of rows identified by `key(row)`; the last row for a key wins.

    `check` raises `ImpossibleRow` for a row whose values cannot be right; such rows, and
    rows whose checksum no longer matches (edited), are dropped on load and recomputed."""

    def __init__(
        self,
        path: Path,
        key_fields: tuple[str, ...],
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = path
        self.key_fields = key_fields
        self.check = check
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if path.exists():
            self._load()

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.key_fields)

    def _load(self) -> None:
        """Read the rows; drop a torn last line (a killed writer), any damaged line (not a
        JSON row with the key fields), any edited row (its checksum differs) and any
        impossible one, so those rows count as missing and are recomputed rather than
        trusted or fatal."""
        lines = self.path.read_bytes().split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        kept: list[bytes] = []
        # why -> the line numbers dropped for it
        dropped: dict[str, list[int]] = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = self.key(row)
            except (ValueError, KeyError, TypeError):  # JSON and UTF-8 errors are ValueErrors
                dropped.setdefault("damaged (not a JSON row)", []).append(lineno)
                continue
            written = row.pop(CHECKSUM, None)  # None: a row from before checksums
            if written is not None and written != row_checksum(row):
                dropped.setdefault("edited since it was written (checksum)", []).append(lineno)
                continue
            try:
                if self.check is not None:
                    self.check(row)
            except ImpossibleRow as why:
                dropped.setdefault(f"impossible value: {why}", []).append(lineno)
                continue
            self.rows[key] = row
            kept.append(line)
        if dropped:
            from persyn.progress import warn

            for why, numbers in dropped.items():
                shown = ", ".join(map(str, numbers[:5])) + (" ..." if len(numbers) > 5 else "")
                warn(
                    f"{self.path}: line {shown} {why}; dropped, "
                    f"{len(numbers)} row(s) will be recomputed"
                )
        if dropped or torn:
            # Rewrite without them so later appends start on a fresh, clean line.
            atomic_write_text(self.path, b"".join(line + b"\n" for line in kept).decode())

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self.rows

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        return self.rows.get(key)

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                # The checksum of the row as it reads back (tuples become lists, ...).
                written = json.loads(json.dumps(row, ensure_ascii=False))
                written[CHECKSUM] = row_checksum(written)
                f.write(json.dumps(written, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            self.rows[self.key(row)] = row


class DamagedMarker(ValueError):
    """A stage marker that cannot be read; the message names the file."""


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock; the message names its PID."""


# Run directories whose lock this process holds. The lock is re-entrant within a process
# (`run_pipeline` holds it around `run_stage`, which takes it again): flock locks belong to
# an open file, so opening and locking the file a second time would lock us out.
_held: set[str] = set()


class RunStore:
    """Paths and stage markers of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        # Nothing is created until something is written: readers (report, inspect) must
        # not leave empty run directories behind.
        self.root = Path(run_dir)

    def path(self, *parts: str) -> Path:
        p = (self.root / Path(*parts)).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact path {'/'.join(parts)!r} escapes the run directory")
        return p

    def name(self, path: Path) -> str:
        """`path` (one of `path`'s) as `path` takes it back, and as messages name it."""
        return str(path.relative_to(self.root.resolve()))

    def read_marker(self, stage: str) -> dict[str, Any] | None:
        """The stage's completion marker; None when absent. Raises `DamagedMarker` (one
        line naming the file) when it cannot be read: the stage is then redone."""
        p = self.path("stages", f"{stage}.json")
        if not p.exists():
            return None
        try:
            marker = json.loads(p.read_bytes())
        except ValueError:  # not JSON, or not UTF-8
            raise DamagedMarker(f"{p}: damaged stage marker (not valid JSON)") from None
        if not isinstance(marker, dict) or not isinstance(marker.get("fingerprint"), str):
            raise DamagedMarker(f"{p}: damaged stage marker (no fingerprint)")
        return marker

    def marker(self, stage: str) -> dict[str, Any] | None:
        """The stage's completion marker; None when absent or damaged (not done)."""
        try:
            return self.read_marker(stage)
        except DamagedMarker:
            return None

    def is_done(self, stage: str, fingerprint: str) -> bool:
        m = self.marker(stage)
        return m is not None and m.get("fingerprint") == fingerprint

    def mark_done(self, stage: str, fingerprint: str, stats: dict[str, Any]) -> None:
        atomic_write_json(
            self.path("stages", f"{stage}.json"),
            {"stage": stage, "fingerprint": fingerprint, "finished_at": time.time(), **stats},
        )

    def update_marker(self, stage: str, **fields: Any) -> None:
        """Add fields to a stage's marker; when it finished stays as it was."""
        marker = self.read_marker(stage)
        if marker is not None:
            atomic_write_json(self.path("stages", f"{stage}.json"), {**marker, **fields})

    def lock_holder(self) -> int | None:
        """The PID of the process holding the run directory's lock, None when free.

        For readers (`persyn inspect`): nothing is created. The PID file alone can be stale
        (a holder killed by SIGKILL leaves its PID), so a PID counts only while taking a
        shared lock fails."""
        path = self.root / ".lock"
        if str(self.root.resolve()) in _held:
            return os.getpid()
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            if not holder.isdigit():
                return None  # released: the holder truncates the file
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return int(holder)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory exclusively (`RUN_DIR/.lock`, with the holder's PID).

        Two runs on one directory would compute and append every row twice; the second
        fails at once instead (`RunDirBusy`). The lock is `flock`, which the kernel drops
        when the holder exits, even by SIGKILL, so a stale lock is taken over for free."""
        key = str(self.root.resolve())
        if key in _held:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusy(
                f"{self.root} is in use by persyn (PID {holder}); wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            os.ftruncate(fd, 0)  # no PID left behind to mislead a reader
            os.close(fd)  # releases the lock

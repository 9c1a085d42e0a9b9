"""The answer store: every teacher answer, shared by every run on this machine.

A teacher asked the same prompt with the same settings gives an answer persyn already
paid for; the store keeps it, so a second run (another alpha, another student, another
router, a teacher added to the pool) asks a teacher only what no run asked it before.
`stages.common.ask_teacher` looks every prompt up here before it calls a teacher, appends
the answers found to the run's row log as if generated, and writes each new answer here.

Where: `store` in the config (a file; `none` keeps only the run's own row logs), else
the `PERSYN_STORE` environment variable (a file, or `none`), else the user cache
(`platformdirs.user_cache_dir("persyn")` where installed, else `$XDG_CACHE_HOME/persyn`
or `~/.cache/persyn`), file `answers.sqlite`.

Why SQLite in WAL mode: several runs (processes) read and write one store at once. A
JSONL log would need its own locking and a full read per lookup; SQLite (stdlib, no
server) gives indexed batch lookups and transactions, and in WAL mode readers never wait
for the writer and a writer waits its turn (`busy_timeout`) instead of failing. A
transaction per batch of answers means a killed run loses at most its batch in flight,
never the file. WAL needs a local file system (not NFS), as the run directory's lock does.

Key: what decides an answer. The teacher fingerprint (`teacher_fingerprint`: model,
system prompt, sampling settings including the seed, a function teacher's code digest)
and the prompt's content hash (`Run.prompt_fp`: the chat messages). Prompt ids and run
directories are not in it: the same text under another id or in another run is the same
question. An unseeded sampled answer is reused like a seeded one, as a run's own row log
already does on a rerun: set another seed for another sample.

Only answers are kept, never errors: a failure (a timeout, a rate limit, a server down)
says nothing about the next try, and the run's row log already holds it for its error
budget and its retry. Answers cut at `max_new_tokens` are answers (`truncated` is kept
with them; whether one counts as failed is the run's `keep_truncated`). Nothing secret
enters: no endpoint, header or key, only the model id (redacted like any logged text),
the answer, its token counts and finish reason. The backends report no timings.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from persyn.redact import redact_text
from persyn.store import RowLog

STORE_ENV = "PERSYN_STORE"
OFF = "none"
FILE_NAME = "answers.sqlite"
SCHEMA = "persyn-answers"
VERSION = 1
BUSY_TIMEOUT_MS = 60_000
CHUNK = 500  # prompt hashes per lookup query (SQLite's parameter limit is 999 on old builds)

# Rowid tables, not WITHOUT ROWID: an answer is often larger than a WITHOUT ROWID row can
# hold in its page, and its overflow pages made the file 4x the text it held.
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    fp TEXT NOT NULL,
    prompt_fp TEXT NOT NULL,
    teacher TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    reasoning TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    truncated INTEGER NOT NULL,
    created REAL NOT NULL,
    UNIQUE (fp, prompt_fp)
);
CREATE TABLE IF NOT EXISTS prompts (prompt_fp TEXT PRIMARY KEY, messages TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS answers_by_teacher ON answers (teacher, fp);
"""
# The fields of a generation row the store holds (besides its keys).
ANSWER_FIELDS = (
    "text",
    "reasoning",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "truncated",
)


COLUMNS = ", ".join(("fp", "prompt_fp", "teacher", "model", *ANSWER_FIELDS, "created"))


class AnswerStoreError(RuntimeError):
    """The store file cannot be used (damaged, or not persyn's); the message names it."""


def user_cache_dir() -> Path:
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "persyn"
    return Path(platformdirs.user_cache_dir("persyn"))


def store_location(configured: str | None) -> Path | None:
    """The store file a run uses, or None when the store is off (see the module doc)."""
    chosen = configured if configured is not None else os.environ.get(STORE_ENV) or None
    if chosen is None:
        return user_cache_dir() / FILE_NAME
    if chosen.strip().lower() == OFF:
        return None
    return Path(chosen).expanduser()


class AnswerStore:
    """One store file. Thread-safe (one connection, one lock); one per process and file
    (`answer_store`), so a forked worker opens its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._wal()
            # with WAL, a power cut may lose the last answers, never the file
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._init_schema()
        except sqlite3.DatabaseError as err:
            raise AnswerStoreError(f"{path}: not a usable persyn answer store ({err})") from err

    def _wal(self) -> None:
        """Switch the file to WAL. Two processes opening a new file at once race for it,
        and SQLite answers the loser "database is locked" at once, without waiting
        `busy_timeout`: wait for the winner here (then the file is already WAL)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _init_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if not tables:
            with self._transaction():  # IMMEDIATE: two first runs do not both create it
                for statement in filter(str.strip, _TABLES.split(";")):
                    self._db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('version', ?)",
                    (SCHEMA, str(VERSION)),
                )
        elif "meta" not in tables:
            raise AnswerStoreError(
                f"{self.path}: an SQLite file without persyn's answer tables "
                f"(it has {sorted(tables)}); point `store` or {STORE_ENV} elsewhere"
            )
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != SCHEMA or meta.get("version") != str(VERSION):
            raise AnswerStoreError(
                f"{self.path}: not a persyn answer store of version {VERSION} "
                f"(schema {meta.get('schema')!r}, version {meta.get('version')!r})"
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, under this store's lock; an SQLite failure (a disk full, a lock
        held past `busy_timeout`, a file damaged since it was opened) is one line naming
        the file."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as err:
                raise AnswerStoreError(f"{self.path}: answer store: {err}") from err

    # -- what ask_teacher uses -------------------------------------------------------
    def lookup(self, fp: str, prompt_fps: Iterable[str]) -> dict[str, dict[str, Any]]:
        """{prompt_fp: the stored answer's fields} for the prompts `fp` answered before;
        one query per chunk of prompts."""
        wanted = list(dict.fromkeys(prompt_fps))
        found: dict[str, dict[str, Any]] = {}
        columns = ", ".join(ANSWER_FIELDS)
        with self._using() as db:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                query = (
                    f"SELECT prompt_fp, {columns} FROM answers "
                    f"WHERE fp = ? AND prompt_fp IN ({marks})"
                )
                for prompt_fp, *values in db.execute(query, (fp, *chunk)):
                    row = dict(zip(ANSWER_FIELDS, values, strict=True))
                    row["truncated"] = bool(row["truncated"])
                    found[prompt_fp] = row
        return found

    def put(
        self,
        teacher: str,
        model: str,
        rows: Iterable[dict[str, Any]],
        messages: Callable[[str], list[dict[str, str]]],
    ) -> int:
        """Keep the answers among generation `rows` (error rows are skipped); `messages`
        gives a row's prompt (by prompt id), kept once per prompt hash for `export`."""
        answers = [r for r in rows if r.get("error") is None]
        if not answers:
            return 0
        now = time.time()
        model = redact_text(model)
        values = [
            (r["fp"], r["prompt_fp"], teacher, model, *(r[f] for f in ANSWER_FIELDS), now)
            for r in answers
        ]
        prompts = {r["prompt_fp"]: json.dumps(messages(r["prompt_id"])) for r in answers}
        with self._using() as db, self._transaction():
            db.executemany(
                f"INSERT OR REPLACE INTO answers ({COLUMNS}) VALUES ({','.join('?' * 11)})", values
            )
            db.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?)", prompts.items())
        return len(answers)

    # -- what `persyn store` uses ----------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        """Answers per teacher name, model and fingerprint, newest first."""
        query = (
            "SELECT teacher, model, fp, COUNT(*), SUM(completion_tokens), MIN(created), "
            "MAX(created) FROM answers GROUP BY teacher, model, fp ORDER BY MAX(created) DESC"
        )
        keys = ("teacher", "model", "fp", "answers", "completion_tokens", "first", "last")
        with self._using() as db:
            return [dict(zip(keys, r, strict=True)) for r in db.execute(query)]

    def size_bytes(self) -> int:
        """The file and its write-ahead log on disk."""
        parts = [self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
        return sum(p.stat().st_size for p in parts if p.exists())

    def prune(
        self, teacher: str | None = None, fp: str | None = None, older_than_s: float | None = None
    ) -> int:
        """Delete the answers matching every given filter (at least one); returns how many.
        Prompts no answer refers to any more go too; the file shrinks (VACUUM)."""
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("teacher = ?", teacher), ("fp LIKE ? || '%'", fp)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if older_than_s is not None:
            where.append("created < ?")
            params.append(time.time() - older_than_s)
        if not where:
            raise ValueError("prune: name a teacher, a fingerprint or an age")
        with self._using() as db:
            with self._transaction():
                gone = db.execute(
                    f"DELETE FROM answers WHERE {' AND '.join(where)}", params
                ).rowcount
                db.execute(
                    "DELETE FROM prompts WHERE prompt_fp NOT IN (SELECT prompt_fp FROM answers)"
                )
            db.execute("VACUUM")
        return gone

    def export_rows(self, teacher: str | None = None) -> Iterator[dict[str, Any]]:
        """One record per answer, the newest per (teacher name, prompt) where a teacher's
        settings changed: a `calibration.source` in the records layout (see `persyn store
        export`). Prompts of several messages keep their user turns, joined as `Prompt.text`
        joins them; the prompt hash is the record's id."""
        query = (
            "SELECT a.prompt_fp, p.messages, a.teacher, a.model, a.text, a.completion_tokens, "
            "a.created FROM answers a JOIN prompts p USING (prompt_fp)"
            + (" WHERE a.teacher = ?" if teacher is not None else "")
            + " ORDER BY a.prompt_fp, a.teacher, a.created DESC"
        )
        with self._using() as db:
            rows = db.execute(query, () if teacher is None else (teacher,)).fetchall()
        seen: set[tuple[str, str]] = set()
        for prompt_fp, messages, name, model, text, tokens, _ in rows:
            if (prompt_fp, name) in seen:
                continue
            seen.add((prompt_fp, name))
            turns = json.loads(messages)
            prompt = "\n".join(m["content"] for m in turns if m["role"] != "assistant")
            yield {
                "id": prompt_fp,
                "prompt": prompt,
                "model": name,
                "teacher_model": model,
                "response": text,
                "completion_tokens": tokens,
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock is taken up front,
    so two writers queue on `busy_timeout` instead of one failing on an upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


_OPEN: dict[tuple[Path, int], AnswerStore] = {}
_OPEN_LOCK = threading.Lock()


def answer_store(configured: str | None) -> AnswerStore | None:
    """This process's store for a config's `store` value, opened once; None when off."""
    path = store_location(configured)
    if path is None:
        return None
    key = (path.absolute(), os.getpid())
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = AnswerStore(path)
        return _OPEN[key]


def reuse_answers(
    store: AnswerStore,
    rowlog: RowLog,
    teacher: str,
    fp: str,
    prompt_ids: list[str],
    prompt_fp: Callable[[str], str],
) -> set[str]:
    """Append to `rowlog` the stored answers of `teacher` (fingerprint `fp`) to
    `prompt_ids`, as the generation rows asking it would have written; returns the ids
    answered so, which need no teacher call."""
    hashes = {pid: prompt_fp(pid) for pid in prompt_ids}
    stored = store.lookup(fp, hashes.values())
    rows = [
        {
            "prompt_id": pid,
            "teacher": teacher,
            "fp": fp,
            "prompt_fp": h,
            **stored[h],
            "error": None,
            "from_store": True,  # an earlier run paid for it (the spend cap skips it)
        }
        for pid, h in hashes.items()
        if h in stored
    ]
    rowlog.append(rows)
    return {r["prompt_id"] for r in rows}

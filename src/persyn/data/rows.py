"""Rows in: JSONL, JSON, CSV/TSV, Parquet, a `datasets` folder or a hub dataset, each row a
dict with the place it came from (file and line/row) for one-line errors.

`source_digest` hashes a local source's bytes: `prepare`'s fingerprint includes it, so an
edited prompts file is prepared again.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from persyn.config import PromptsConfig


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {lineno}: invalid UTF-8 ({err.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # else a cut-off row errs on "line 2"
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {lineno}: {json_problem(err)}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object per line")
            yield lineno, row


def json_problem(err: json.JSONDecodeError) -> str:
    # err.msg alone can end mid-sentence ("Invalid control character at"): add the column.
    return f"malformed JSON ({err.msg.removesuffix(' at')} at column {err.colno})"


def _rows_from_json(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A JSON array of objects, or an object whose `data` is one."""
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: invalid UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}: {json_problem(err)}") from None
    rows = data.get("data") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise DataError(
            f'{path}: expected a JSON array of objects (or {{"data": [...]}}); '
            "for one object per line use .jsonl"
        )
    for i, row in enumerate(rows):
        where = f"{path}: item {i}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row


def _rows_from_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """CSV (or TSV) with a header row; every value is text, `meta` and `messages`
    columns hold JSON. Locations are the line where the record starts."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # utf-8-sig: spreadsheet programs start CSV files with a byte order mark
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        line = 1
        try:
            header = next(reader, [])
            if len(set(header)) != len(header) or any(not h.strip() for h in header):
                raise DataError(f"{path}: line 1: header has empty or repeated column names")
            for record in reader:
                start, line = line + 1, reader.line_num
                if not record:
                    continue
                if len(record) != len(header):
                    raise DataError(
                        f"{path}: line {start}: {len(record)} fields, the header has "
                        f"{len(header)}; quote values that contain {delimiter!r} or line breaks"
                    )
                yield f"{path}: line {start}", dict(zip(header, record, strict=True))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: line {line + 1}: invalid UTF-8 ({err.reason})") from None
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from None


# What a hub dataset id looks like (`name` or `owner/name`); anything else is a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_FILE_FORMATS = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}


def _rows_from_hub(source: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A hub dataset. One request checks it exists first: a wrong id then fails in a
    second with a clear line, not after the hub client's retries."""
    if not _HUB_ID.fullmatch(source):
        raise DataError(
            f"{Path(source).expanduser().absolute()}: no such file or folder (nor a hub "
            "dataset id OWNER/NAME); check prompts.source"
        )
    import datasets
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if not huggingface_hub.constants.HF_HUB_OFFLINE:  # offline: only the cache can answer
        try:
            huggingface_hub.HfApi().dataset_info(source, timeout=10)
        except GatedRepoError:
            raise DataError(
                f"{source}: gated hub dataset; accept its terms on the hub, then log in "
                "(`hf auth login`)"
            ) from None
        except RepositoryNotFoundError:
            raise DataError(
                f"{source}: no such file or folder, and no hub dataset by that id (a private "
                "one needs `hf auth login`); check prompts.source"
            ) from None
        except Exception as err:  # network errors: the hub client raises many kinds
            raise DataError(
                f"{source}: cannot reach the hub ({type(err).__name__}: {first_line(err)}); "
                "check the network, or set HF_HUB_OFFLINE=1 to use a cached copy"
            ) from None
    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as err:  # missing split, unsupported layout, cache miss offline, ...
        raise DataError(
            f"{source}: cannot load the hub dataset ({type(err).__name__}: "
            f"{first_line(err)}); check prompts.source and prompts.split"
        ) from None
    for i, row in enumerate(ds):
        yield f"{source}: row {i}", row


def first_line(err: Exception) -> str:
    """An exception's message, first line only (for one-line errors)."""
    return (str(err).strip().splitlines() or [""])[0]


def iter_rows(cfg: PromptsConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for error messages, row) for every source row."""
    source = str(cfg.source)
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in _FILE_FORMATS and not path.is_file():
        raise DataError(f"{path.absolute()}: prompts file not found (prompts.source)")
    if suffix == ".jsonl":
        for lineno, row in jsonl_rows(path):
            yield f"{path}: line {lineno}", row
    elif suffix == ".json":
        yield from _rows_from_json(path)
    elif suffix in {".csv", ".tsv"}:
        yield from _rows_from_csv(path)
    elif suffix == ".parquet" or path.is_dir():
        import datasets

        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            ds = loaded[cfg.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            ds = datasets.Dataset.from_parquet(str(path))
        for i, row in enumerate(ds):
            yield f"{source}: row {i}", row
    elif path.exists():
        raise DataError(
            f"{path}: unsupported prompts file type {suffix or '(no extension)'}; use .jsonl, "
            ".json, .csv, .tsv, .parquet or a `datasets` folder"
        )
    else:
        yield from _rows_from_hub(source, cfg.split)


def source_digest(cfg: PromptsConfig) -> str | None:
    """sha256 of a local prompts source's bytes (a folder: every file, by relative path);
    None for a hub id or a generated set. Part of `prepare`'s fingerprint: an edited file
    is prepared again even if its size and modification time did not change."""
    return None if cfg.source is None else path_digest(Path(cfg.source).expanduser())


def path_digest(path: Path) -> str | None:
    """sha256 of a local file's bytes, or of every file of a folder with its relative
    path; None when `path` is neither (a hub id)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else "").encode() + b"\0")
        stat = f.stat()
        digest.update(_file_sha256(str(f.resolve()), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Cached per process by (path, size, mtime): fingerprints are computed several times
    # per run; a new process always reads the bytes.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

"""Reading a parallel-response dataset: its rows from JSONL, JSON, Parquet, folders of
those, `records` files, a `datasets` folder or a hub id, and a fingerprint of its content
(a changed file is imported again). What the rows mean is `persyn.calibration_import`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from persyn.config import CalibrationSource, fingerprint
from persyn.data import DataError, first_line, jsonl_rows, path_digest


def source_fingerprint(source: CalibrationSource | None) -> str:
    """The source config and its data's content: a changed file reruns the import. A hub
    dataset is identified by id, split and revision (its content is not read here)."""
    if source is None:
        return fingerprint(None)
    digest = path_digest(Path(source.path).expanduser())
    return fingerprint(source, "hub" if digest is None else digest)


# -- reading --------------------------------------------------------------------------
def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for lineno, row in jsonl_rows(path):
        yield f"{path}: line {lineno}", row


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid UTF-8 JSON ({err})") from None


def _records_rows(src: CalibrationSource, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no JSON files (calibration.source.records_field)")
    for file in files:
        data = _read_json(file)
        records = data.get(src.records_field) if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise DataError(f"{file}: expected an object with a list {src.records_field!r}")
        for i, row in enumerate(records):
            where = f"{file}: {src.records_field}[{i}]"
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected an object")
            # The folder names the model (LLMRouterBench); a `model_field` in the row wins.
            yield where, {"__folder__": file.parent.name, **row}


def source_rows(src: CalibrationSource) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for error messages, row) for every row of the source."""
    path = Path(src.path).expanduser()
    if src.records_field:
        if not path.exists():
            raise DataError(f"{path.absolute()}: not found (calibration.source.path)")
        yield from _records_rows(src, path)
        return
    if path.suffix in {".jsonl", ".json", ".parquet"} and not path.is_file():
        raise DataError(f"{path.absolute()}: not found (calibration.source.path)")
    if path.suffix == ".jsonl":
        yield from _jsonl_rows(path)
        return
    if path.suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {i}: expected an object")
            yield f"{path}: row {i}", row
        return
    import datasets

    if path.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
    elif path.is_dir():
        parquet, jsonl = sorted(path.rglob("*.parquet")), sorted(path.rglob("*.jsonl"))
        if parquet:  # e.g. a hub dataset's `data/` folder of shards
            ds = datasets.Dataset.from_parquet([str(p) for p in parquet])
        elif jsonl:
            for file in jsonl:
                yield from _jsonl_rows(file)
            return
        else:
            loaded = datasets.load_from_disk(str(path))
            ds = loaded[src.split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        try:
            ds = datasets.load_dataset(src.path, split=src.split, revision=src.revision)
        except Exception as err:  # offline, unknown id, gated: one line, not a traceback
            raise DataError(
                f"{src.path}: not a local file or folder, and not loadable as a hub dataset "
                f"({first_line(err) or type(err).__name__})"
            ) from None
    for i, row in enumerate(ds):
        yield f"{src.path}: row {i}", row

"""Loading JSON / JSONL files and cutting document ranges, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError


def load_json_records(path: str | Path) -> list[Any]:
    """Read a JSON list (``.json``) or one JSON value per line (``.jsonl``)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    text = path.read_text(encoding="utf8")
    if path.suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"line {lineno} is not valid JSON: {err.msg}", path=path) from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}", path=path
        ) from None
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of documents, got {type(data).__name__}", path=path)
    return data


def select_records(
    records: list[Any], *, first: int | None = None, last: int | None = None
) -> list[tuple[int, Any]]:
    """Keep the first and/or last N records, with their index in the file.

    ``first`` applies before ``last``: ``first=450, last=50`` gives records 400-449.
    The redocred-small split is ``first=400`` (train) and ``last=100`` (dev).
    """
    indexed = list(enumerate(records))
    if first is not None:
        if first < 0:
            raise ValueError(f"first must be >= 0, got {first}")
        indexed = indexed[:first]
    if last is not None:
        if last < 0:
            raise ValueError(f"last must be >= 0, got {last}")
        indexed = indexed[len(indexed) - last :] if last else []
    return indexed

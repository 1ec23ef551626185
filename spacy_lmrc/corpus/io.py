"""Loading JSON / JSONL files, telling corpus formats apart and cutting document ranges.

Every problem with the file itself (missing, a folder, binary, not UTF-8, not JSON, empty)
is an :class:`InputError` naming the file, never a traceback.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InputError, SkipReport

# keys that only one format's records carry (DocRED documents, TACRED and SemEval records)
FORMAT_KEYS = {"docred": ("vertexSet", "sents"), "tacred": ("token",), "semeval": ("sentence",)}
FORMAT_NAMES = {"docred": "DocRED", "tacred": "TACRED", "semeval": "SemEval"}


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing file, a folder or binary data is an InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found", path=path)
    if path.is_dir():
        raise InputError(f"is a folder; expected a {what}", path=path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read the {what}: {err.strerror}", path=path) from None
    try:
        text = data.decode("utf8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"not a UTF-8 text file (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"expected JSON", path=path) from None
    if "\x00" in text:
        raise InputError("contains NUL bytes: a binary (or UTF-16) file, expected UTF-8 JSON",
                         path=path)
    return text


def load_json(path: str | Path, what: str = "file") -> Any:
    """One JSON value from ``path`` (see :func:`read_text` for the file checks)."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}", path=path
        ) from None


def load_json_records(path: str | Path, *, allow_empty: bool = True) -> list[Any]:
    """Read a JSON list (``.json``) or one JSON value per line (``.jsonl``).

    Corpora set ``allow_empty=False``: a file of no documents is an error, not an empty run
    (a predictions file may well be empty).
    """
    path = Path(path)
    records = _load_records(path)
    if not records and not allow_empty:
        raise InputError("contains no documents (an empty list)", path=path)
    return records


def _load_records(path: Path) -> list[Any]:
    """The records of a ``.json`` list or a ``.jsonl`` file."""
    if path.suffix != ".jsonl":
        data = load_json(path)
        if not isinstance(data, list):
            raise InputError(f"expected a JSON list of documents, got {type(data).__name__}",
                             path=path)
        return data
    records = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise InputError(f"line {lineno} is not valid JSON: {err.msg}", path=path) from None
    return records


def record_format(record: Any) -> str | None:
    """The format whose own keys ``record`` carries (a bare string is a SemEval sentence)."""
    if isinstance(record, str):
        return "semeval"
    if isinstance(record, dict):
        for fmt, keys in FORMAT_KEYS.items():
            if any(key in record for key in keys):
                return fmt
    return None


def detect_records_format(records: list[Any], path: str | Path) -> str:
    """``docred``, ``tacred`` or ``semeval``, decided by every record, not the first alone.

    Records without any format's keys do not vote (the chosen reader then names what they
    lack); records of two formats in one file are an error that names both.
    """
    if not records:
        raise InputError("contains no documents (an empty list)", path=path)
    votes = Counter(fmt for fmt in map(record_format, records) if fmt is not None)
    if not votes:
        raise InputError(
            "cannot tell the format: no record has DocRED (vertexSet, sents), TACRED (token) "
            "or SemEval (sentence) fields; give --format", path=path)
    if len(votes) > 1:
        firsts = {}
        for index, record in enumerate(records):
            firsts.setdefault(record_format(record), index)
        parts = [f"{count} {FORMAT_NAMES[fmt]} (first: document {firsts[fmt]})"
                 for fmt, count in votes.most_common()]
        raise InputError(f"mixes formats: {', '.join(parts)}; give --format to read it as one "
                         f"(the others are then reported as invalid)", path=path)
    return next(iter(votes))


def select_records(
    records: list[Any], *, first: int | None = None, last: int | None = None
) -> list[tuple[int, Any]]:
    """Keep the first and/or last N records, with their index in the file.

    ``first`` applies before ``last``: ``first=450, last=50`` gives records 400-449.
    The redocred-small split is ``first=400`` (train) and ``last=100`` (dev).
    """
    for name, value in (("first", first), ("last", last)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InputError(f"--{name} must be a count >= 0, got {value!r}")
    indexed = list(enumerate(records))
    if first is not None:
        indexed = indexed[:first]
    if last is not None:
        indexed = indexed[len(indexed) - last :] if last else []
    return indexed


class TitleCheck:
    """Titles identify documents (result.json, scoring): a repeat is warned about and counted,
    or an error where ``strict`` (gold files for scoring)."""

    def __init__(self, path: str | Path | None, report: SkipReport, strict: bool = False) -> None:
        self.path = path
        self.report = report
        self.strict = strict
        self.seen: dict[str, int] = {}

    def __call__(self, title: str | None, index: int) -> None:
        if title is None:
            return
        if title not in self.seen:
            self.seen[title] = index
            return
        if self.strict:
            raise InputError(
                f"duplicate title, also document {self.seen[title]}; titles identify "
                f"documents in predictions, so a gold file needs unique titles",
                path=self.path, index=index, title=title, field="title", kind="duplicate title")
        self.report.warn("documents with a title already used by an earlier document",
                         path=self.path, index=index, title=title)


def warn_unreported(report: SkipReport, owned: bool) -> None:
    """Readers called without a report still say what they skipped or warned about."""
    if owned and (report.errors or report.warnings):
        warnings.warn(report.summary(), UserWarning, stacklevel=3)

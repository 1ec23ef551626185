"""Named training splits of Re-DocRED: which documents of which files a split trains on.

Re-DocRED's official train split (3,053 documents) cannot be had everywhere, so the project
names the splits it trains on and builds each as one JSON file of records, unchanged, that any
DocRED reader takes:

* ``small`` (redocred-small): the first 400 documents of ``dev_revised.json``;
* ``medium`` (redocred-medium, the default): the 992 documents of Re-DocRED train in
  ``train_revised_992.json``, then the first 400 of ``dev_revised.json`` (1,392 documents);
* ``full``: ``train_revised.json``, Re-DocRED's whole train split (paper scale).

Dev is the last 100 documents of ``dev_revised.json`` for ``small`` and ``medium``: no dev
document is in either train split. Figures on ``small`` or ``medium`` are not comparable with
published Re-DocRED results (those train on ``full`` and report the test split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .io import load_json_records


@dataclass(frozen=True)
class SplitPart:
    """The first ``first`` records of ``file`` (all of them when ``first`` is None)."""

    file: str
    first: int | None = None


SPLITS: dict[str, tuple[SplitPart, ...]] = {
    "small": (SplitPart("dev_revised.json", 400),),
    "medium": (SplitPart("train_revised_992.json"), SplitPart("dev_revised.json", 400)),
    "full": (SplitPart("train_revised.json"),),
}


def split_records(name: str, data_dir: str | Path) -> tuple[list[Any], list[str]]:
    """The training records of split ``name`` read from ``data_dir`` (the folder holding
    Re-DocRED's files), in order, and a line per part saying what it took."""
    if name not in SPLITS:
        raise InputError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})",
                         field="split")
    records: list[Any] = []
    described = []
    for part in SPLITS[name]:
        path = Path(data_dir) / part.file
        if not path.exists():
            raise InputError(f"split {name!r} needs this file", path=path)
        part_records = load_json_records(path, allow_empty=False)
        if part.first is not None:
            if len(part_records) < part.first:
                raise InputError(f"split {name!r} takes the first {part.first} documents, but "
                                 f"the file holds {len(part_records)}", path=path)
            part_records = part_records[: part.first]
        described.append(f"{len(part_records)} documents of {path}"
                         + (f" (the first {part.first})" if part.first is not None else ""))
        records += part_records
    return records, described

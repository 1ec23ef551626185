"""Relation-set files: the one loader for every label file the corpora and tasks read.

A relation set is ``{label: name}``: the label as ``doc._.relations`` stores it and the name an
LLM sees in prompts. The corpora ship it in several shapes, all read here, so the tasks, the
sentence readers (integer label ids) and the CLI's ``--relation-set`` agree on one format.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InputError
from .io import load_json

#: DocRED's no-relation entry (``rel2id.json``): an id, not a relation
DOCRED_NO_RELATION = "Na"

SHAPES = ('a {label: name} object (DocRED rel_info.json), a {name: id} map with ids 0..N-1 '
          '(rel2id.json), a features schema with relation.names, or a list of names')


def load_relation_set(path: str | Path) -> dict[str, str]:
    """The relation set ``{label: name}`` of a label file, in the file's order (by id for a
    ``{name: id}`` map: a label's position is its integer id, DocRED's ``Na`` aside).

    Accepted shapes are :data:`SHAPES`; labels without names are their own names. DocRED's
    ``Na`` is left out. Labels must be distinct non-empty strings, so a truncated or
    hand-edited file is caught here, not as a wrong label later.
    """
    data = load_json(path, "relation set file")
    if isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
        labels = dict(data)
    else:
        labels = {name: name for name in _names(data, path)}
    labels.pop(DOCRED_NO_RELATION, None)
    bad = [x for pair in labels.items() for x in pair if not x.strip()]
    if bad or not labels:
        raise InputError("relation labels and names must be non-empty strings" if bad
                         else "the relation set is empty", path=path)
    return labels


def _names(data: Any, path: str | Path) -> list[str]:
    """The label names of a list, a features schema or a ``{name: id}`` map, in id order."""
    names: Any = None
    if isinstance(data, list):
        names = data
    elif isinstance(data, dict) and isinstance(data.get("relation"), dict):
        names = data["relation"].get("names")
    elif isinstance(data, dict) and data and all(
        isinstance(v, int) and not isinstance(v, bool) for v in data.values()
    ):
        if sorted(data.values()) != list(range(len(data))):
            raise InputError("expected a {name: id} map with ids 0..N-1, each used once",
                             path=path)
        names = [name for name, _ in sorted(data.items(), key=lambda kv: kv[1])]
    if not isinstance(names, list) or not names:
        raise InputError(f"expected a non-empty list of names or {SHAPES}", path=path)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise InputError(f"label names must be non-empty strings, got {bad[0]!r}", path=path)
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise InputError(f"label name {repeated[0]!r} occurs more than once", path=path)
    return names

"""``spacy-lmrc stats``: corpus statistics (LMRC Table 1)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..stats import corpus_stats
from ._app import app
from ._util import (
    describe_slice,
    first_option,
    format_option,
    friendly_errors,
    info,
    label_names_option,
    last_option,
    load_docs,
    relation_set_option,
    relations_option,
    skip_invalid_option,
)


@app.command("stats")
@friendly_errors
def stats_cli(
    path: Path = typer.Argument(..., help="DocRED JSON, SemEval/TACRED JSON or a .spacy file"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    first: int | None = first_option(),
    last: int | None = last_option(),
    fmt: str = format_option(),
    relations: Path | None = relations_option(),
    label_names: Path | None = label_names_option(),
    skip_invalid: bool = skip_invalid_option(),
    relation_set: Path | None = typer.Option(
        None, "--relation-set", help="DocRED: rel_info.json or rel2id.json; counts gold "
        "relations outside it"),
) -> None:
    """Count documents, entities, candidate pairs, NA pairs, relation pairs and triples."""
    docs, report = load_docs(path, fmt=fmt, first=first, last=last, skip_invalid=skip_invalid,
                             relations_path=relations, label_names_path=label_names,
                             relation_set=relation_set_option(relation_set))
    stats = corpus_stats(docs)
    stats["skipped_invalid"] = len(report)
    if as_json:
        print(json.dumps(stats))
        return
    info(f"corpus: {describe_slice(path, first, last)}")
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        print(f"{key:<{width}}  {value:>10,}")

"""``spacy-lmrc stats``: corpus statistics (LMRC Table 1)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..stats import corpus_stats
from ._app import app
from ._util import (
    count_or_null,
    describe_slice,
    friendly_errors,
    info,
    load_docs,
    relation_set_option,
)


@app.command("stats")
@friendly_errors
def stats_cli(
    path: Path = typer.Argument(..., help="DocRED JSON, SemEval/TACRED JSON or a .spacy file"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    first: int | None = typer.Option(None, "--first", parser=count_or_null,
                                     help="Only the first N documents"),
    last: int | None = typer.Option(None, "--last", parser=count_or_null,
                                    help="Then only the last N documents"),
    fmt: str = typer.Option("auto", "--format", help="auto, spacy, docred, semeval or tacred"),
    relations: Path | None = typer.Option(None, "--relations", help="SemEval labels file"),
    label_names: Path | None = typer.Option(None, "--label-names", help="SemEval label names"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count bad documents"),
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

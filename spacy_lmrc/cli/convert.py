"""``spacy-lmrc convert``: benchmark files to ``.spacy`` DocBins with the Doc schema."""

from __future__ import annotations

from pathlib import Path

import typer
from spacy.tokens import DocBin

from ._app import app
from ._util import (
    check_output,
    count_or_null,
    describe_slice,
    friendly_errors,
    info,
    load_docs,
    relation_set_option,
    timed,
    write_atomic,
)


@app.command("convert")
@friendly_errors
@timed
def convert_cli(
    input_path: Path = typer.Argument(..., help="DocRED/Re-DocRED, SemEval or TACRED JSON file"),
    output_path: Path = typer.Argument(..., help="Output .spacy file"),
    fmt: str = typer.Option("auto", "--format", help="auto, docred, semeval or tacred"),
    first: int | None = typer.Option(None, "--first", parser=count_or_null,
                                     help="Keep the first N documents"),
    last: int | None = typer.Option(None, "--last", parser=count_or_null,
                                    help="Then keep the last N documents"),
    relations: Path | None = typer.Option(
        None, "--relations", help="SemEval: labels parallel to a list of sentences"),
    label_names: Path | None = typer.Option(
        None, "--label-names", help="SemEval: names of integer label ids (relations.json)"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip bad documents (and report them) instead of failing"),
    relation_set: Path | None = typer.Option(
        None, "--relation-set", help="DocRED: rel_info.json or rel2id.json; counts gold "
        "relations outside it"),
) -> None:
    """Convert a corpus to a .spacy file (redocred-small: --first 400 / --last 100).

    The output is written atomically: a failed run leaves no half-written file.
    """
    check_output(output_path)
    docs, report = load_docs(input_path, fmt=fmt, first=first, last=last,
                             skip_invalid=skip_invalid, relations_path=relations,
                             label_names_path=label_names,
                             relation_set=relation_set_option(relation_set))
    write_atomic(output_path, DocBin(docs=docs, store_user_data=True).to_bytes())
    info(f"wrote {len(docs)} documents from {describe_slice(input_path, first, last)} "
         f"to {output_path} (skipped {len(report)})")

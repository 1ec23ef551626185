"""``spacy-lmrc convert``: benchmark files to ``.spacy`` DocBins with the Doc schema."""

from __future__ import annotations

from pathlib import Path

import typer
from spacy.tokens import DocBin

from ._app import app
from ._util import (
    check_output,
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
    timed,
    write_atomic,
)


@app.command("convert")
@friendly_errors
@timed
def convert_cli(
    input_path: Path = typer.Argument(..., help="DocRED/Re-DocRED, SemEval or TACRED JSON file"),
    output_path: Path = typer.Argument(..., help="Output .spacy file"),
    fmt: str = format_option("auto, docred, semeval or tacred"),
    first: int | None = first_option(),
    last: int | None = last_option(),
    relations: Path | None = relations_option(),
    label_names: Path | None = label_names_option(),
    skip_invalid: bool = skip_invalid_option(),
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

"""``spacy-lmrc split``: a named Re-DocRED training split as one JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..corpus.splits import SPLITS, split_records
from ._app import app
from ._util import check_output, friendly_errors, info, timed, write_atomic


@app.command("split")
@friendly_errors
@timed
def split_cli(
    name: str = typer.Argument(..., help=f"The split: {', '.join(SPLITS)}"),
    output_path: Path = typer.Argument(..., help="Output JSON file (a list of DocRED records)"),
    data_dir: Path = typer.Option(Path("assets/redocred"), "--data-dir",
                                  help="Folder with Re-DocRED's files"),
) -> None:
    """Write the training documents of a named split (small, medium or full) to one file.

    medium (the default of the workflow) = the 992 Re-DocRED train documents of
    train_revised_992.json + the first 400 of dev_revised.json; small = those 400 only; full =
    train_revised.json. Records are copied unchanged, in order.
    """
    check_output(output_path)
    records, described = split_records(name, data_dir)
    write_atomic(output_path, json.dumps(records, ensure_ascii=False))
    for line in described:
        info(f"  {line}")
    info(f"wrote split {name!r}: {len(records)} documents to {output_path}")

"""``spacy-lmrc extract``: relations from plain text with a packaged or saved pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import spacy
import typer
from spacy.language import Language
from tqdm import tqdm

from ..corpus.io import load_json_records
from ..errors import InputError
from ..render import format_table, relation_records, render_html
from ._app import app
from ._util import friendly_errors, info, timed


def read_texts(path: Path, by_line: bool) -> list[tuple[str | None, str]]:
    """(title, text) pairs from ``.txt`` (one document, or one per line) or ``.jsonl``."""
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.suffix in (".jsonl", ".json"):
        texts = []
        for i, record in enumerate(load_json_records(path)):
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise InputError("expected a record with a non-empty 'text'", path=path, index=i,
                                 field="text")
            title = record.get("title", record.get("id"))
            texts.append((str(title) if title is not None else None, text))
        return texts
    content = path.read_text(encoding="utf8")
    if by_line:
        return [(None, line) for line in content.splitlines() if line.strip()]
    if not content.strip():
        raise InputError("the file is empty", path=path)
    return [(path.stem, content)]


def load_pipeline(name: str) -> Language:
    """``spacy.load`` with an actionable error for a name that is neither package nor folder."""
    try:
        return spacy.load(name)
    except OSError as err:
        raise InputError(f"could not load the pipeline: {err}", path=name) from None


def label_names_of(nlp: Language) -> dict[str, str]:
    """Relation id -> name from any pipe that carries a task with a label map."""
    for _, pipe in nlp.pipeline:
        task = getattr(pipe, "task", None)
        labels = getattr(task, "labels", None)
        if isinstance(labels, dict):
            return dict(labels)
    return {}


@app.command("extract")
@friendly_errors
@timed
def extract_cli(
    pipeline: str = typer.Argument(..., help="Installed pipeline name or pipeline folder"),
    input_path: Path = typer.Argument(..., help=".txt (one document) or .jsonl ({'text'})"),
    lines: bool = typer.Option(False, "--lines", help=".txt: one document per non-empty line"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write JSONL here, not stdout"),
    html: Path | None = typer.Option(None, "--html", help="Write an HTML view (entities, arcs)"),
    batch_size: int = typer.Option(8, "--batch-size", help="Documents per nlp.pipe batch"),
) -> None:
    """Print relations as JSONL (stdout) and as a table (stderr); optionally an HTML view."""
    texts = read_texts(input_path, lines)
    nlp = load_pipeline(pipeline)
    docs = []
    stream: Iterator = nlp.pipe((text for _, text in texts), batch_size=batch_size)
    for (title, _), doc in zip(texts, tqdm(stream, total=len(texts), desc="extract",
                                           disable=len(texts) < 2)):
        if title is not None:
            doc._.title = title
        docs.append(doc)
    names = label_names_of(nlp)
    records = [r for i, doc in enumerate(docs) for r in relation_records(doc, i, names)]
    jsonl = "".join(json.dumps(r) + "\n" for r in records)
    if output is None:
        print(jsonl, end="")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(jsonl, encoding="utf8")
    info(format_table(records))
    info(f"{len(records)} relations in {len(docs)} document(s), "
         f"{sum(len(d._.entities) for d in docs)} entities")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(docs, names), encoding="utf8")
        info(f"wrote {html}")

"""``spacy-lmrc extract``: relations from plain text with a packaged or saved pipeline.

Besides the relations, it says per document how far the text got: mentions, entities, pairs,
candidate pairs and relations, and when no relation came out, the stage that emptied the stream
(no mention found, a single entity, no pair proposed, no relation named).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from ..corpus.io import load_json_records
from ..errors import InputError
from ..render import format_table, relation_records, render_html
from ._app import app
from ._util import friendly_errors, info, timed


def read_texts(path: Path, by_line: bool) -> list[tuple[str | None, str]]:
    """(title, text) pairs from ``.txt`` (one document, or one per line) or ``.jsonl``; an
    empty (or blank) ``.txt`` file has no documents."""
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
        return []
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


@dataclass
class Stages:
    """Which stages a pipeline has: what finds entities, proposes pairs and names relations."""

    entities: str | None
    proposer: Any
    classifier: Any

    @classmethod
    def of(cls, nlp: Language) -> Stages:
        """The last component assigning each of ``doc._.entities``, ``doc._.relation_candidates``
        and ``doc._.relations`` (None where no component does)."""
        def last(attribute: str) -> str | None:
            names = [n for n in nlp.pipe_names if attribute in nlp.get_pipe_meta(n).assigns]
            return names[-1] if names else None

        proposer, classifier = last("doc._.relation_candidates"), last("doc._.relations")
        return cls(last("doc._.entities"), proposer and nlp.get_pipe(proposer),
                   classifier and nlp.get_pipe(classifier))


def explain(doc: Doc, stages: Stages) -> dict[str, Any]:
    """Counts of one extracted Doc (mentions, entities, ordered pairs, candidate pairs when a
    proposer ran, pairs classified, relations) and, with no relation, the stage to blame."""
    n = len(doc._.entities)
    counts: dict[str, Any] = {
        "mentions": sum(len(e["mentions"]) for e in doc._.entities), "entities": n,
        "pairs": n * (n - 1),
        "candidates": len(doc._.relation_candidates) if stages.proposer is not None else None,
        "relations": len(doc._.relations),
    }
    task = getattr(stages.classifier, "task", None)
    counts["classified"] = len(task.select_pairs(doc)) if task is not None and n > 1 else None
    counts["why"] = None if counts["relations"] else _why_empty(counts, stages)
    return counts


def _why_empty(counts: dict[str, Any], stages: Stages) -> str:
    """The first stage after which no relation was possible any more."""
    if stages.entities is None and not counts["entities"]:
        return "the pipeline finds no entities (no NER and lmrc_entity_grouper) and none were given"
    if not counts["entities"]:
        return "0 entities: the NER found no mention in the text"
    if counts["entities"] == 1:
        return "1 entity: no pair of entities to relate"
    if counts["candidates"] == 0:
        threshold = getattr(stages.proposer, "threshold", None)
        at = f" at threshold {threshold:.3g}" if isinstance(threshold, float) else ""
        return f"the proposer kept none of the {counts['pairs']} entity pairs{at}"
    if stages.classifier is None:
        return "the pipeline has no relation classifier"
    return (f"the relation classifier named no relation for the {counts['classified']} "
            f"pairs it was given")


def explanation_line(title: str, counts: dict[str, Any]) -> str:
    """``title: 5 mentions, 3 entities, 6 pairs, 2 proposed, 0 relations: why``."""
    parts = [f"{counts['mentions']} mentions", f"{counts['entities']} entities",
             f"{counts['pairs']} pairs"]
    if counts["candidates"] is not None:
        parts.append(f"{counts['candidates']} proposed")
    parts.append(f"{counts['relations']} relations")
    line = f"{title}: {', '.join(parts)}"
    return f"{line}: {counts['why']}" if counts["why"] else line


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
    """Print relations as JSONL (stdout) and as a table (stderr), and per document what each
    stage found (and why no relation came out); optionally an HTML view."""
    texts = read_texts(input_path, lines)
    nlp = load_pipeline(pipeline)
    if not texts:
        info(f"{input_path}: the file is empty (no text): 0 documents, 0 relations")
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
    if records:
        info(format_table(records))
    stages = Stages.of(nlp)
    for i, doc in enumerate(docs):
        info(explanation_line(doc._.title if doc._.title is not None else f"document {i}",
                              explain(doc, stages)))
    info(f"{len(records)} relations in {len(docs)} document(s), "
         f"{sum(len(d._.entities) for d in docs)} entities")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(docs, names), encoding="utf8")
        info(f"wrote {html}")

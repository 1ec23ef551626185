"""``spacy-lmrc score``: the official DocRED scorer (+ Ign, intra/inter, per relation, pairs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from spacy.tokens import Doc

from ..corpus.io import load_json_records
from ..errors import InputError, SkipReport
from ..metrics import gold_from_doc, score_docred, train_facts_from_docs
from ..metrics.docred import prediction_fact
from ._app import app
from ._util import (
    check_output,
    describe_slice,
    first_option,
    friendly_errors,
    info,
    last_option,
    load_docs,
    relation_set_option,
    write_atomic,
)


def load_predictions(path: Path, gold_docs: list[Doc],
                     relation_set: set[str] | None) -> list[dict[str, Any]]:
    """The records of a result.json, every field type-checked; usable oddities are counted.

    An error names the file, the record (index and title) and the field; predictions whose
    entity index is beyond their gold document's entities, or whose relation is outside
    ``relation_set``, are scored as wrong and reported with a count.
    """
    predictions = load_json_records(path)
    entities = {doc._.title: len(doc._.entities) for doc in gold_docs}
    report = SkipReport()
    for i, pred in enumerate(predictions):
        try:
            (title, head, tail, rel), _ = prediction_fact(pred)
        except InputError as err:
            raise InputError(err.reason, path=path, index=i, title=err.title, field=err.field,
                             kind=err.kind) from None
        if title in entities and max(head, tail) >= entities[title]:
            report.warn("predictions with an entity index beyond their gold document's "
                        "entities (scored as wrong)", path=path, index=i, title=title)
        if relation_set is not None and rel not in relation_set:
            report.warn("predictions with a relation outside the relation set (scored as wrong)",
                        path=path, index=i, title=title)
    if report.warnings:
        info(report.summary())
    if not predictions:
        info(f"warning: file {path}: the prediction list is empty, every score is 0")
    return predictions


@app.command("score")
@friendly_errors
def score_cli(
    gold: Path = typer.Option(..., "--gold", help="Gold DocRED JSON or .spacy file"),
    pred: Path = typer.Option(..., "--pred", help="Predictions in the official result.json format"),
    train: Path | None = typer.Option(
        None, "--train", help="Training split (JSON or .spacy) whose facts Ign F1 ignores"),
    gold_first: int | None = first_option("--gold-first", "gold documents"),
    gold_last: int | None = last_option("--gold-last", "gold documents"),
    train_first: int | None = first_option("--train-first", "training documents"),
    train_last: int | None = last_option("--train-last", "training documents"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the JSON here"),
    relation_set: Path | None = typer.Option(
        None, "--relation-set", help="rel_info.json or rel2id.json: counts gold relations and "
        "predictions outside it"),
) -> None:
    """Score a result.json: P/R/F1, Ign F1, intra/inter F1, per-relation and pair-level scores.

    Prints JSON (fractions in [0, 1]) on stdout and what was evaluated on stderr. The gold
    file needs labels on every document and unique titles (predictions name documents by
    title).
    """
    if output is not None:
        check_output(output)
    relations = relation_set_option(relation_set)
    gold_docs, _ = load_docs(gold, first=gold_first, last=gold_last, require_labels=True,
                             unique_titles=True, relation_set=relations)
    predictions = load_predictions(pred, gold_docs, relations)
    train_facts = None
    if train is not None:
        train_docs, _ = load_docs(train, first=train_first, last=train_last, require_labels=True)
        train_facts = train_facts_from_docs(train_docs)
    scores = score_docred([gold_from_doc(doc) for doc in gold_docs], predictions, train_facts)
    counts = scores["counts"]
    if not counts["gold_facts"]:
        info(f"warning: the gold documents of {gold} hold no relation: recall is undefined (0)")
    info(f"gold: {describe_slice(gold, gold_first, gold_last)} ({counts['documents']} documents, "
         f"{counts['gold_facts']} facts); predictions: {pred} ({counts['predicted']} unique, "
         f"{counts['predictions_for_unknown_titles']} for titles not in gold)")
    if train is not None:
        info(f"Ign F1 ignores {len(train_facts)} facts of "
             f"{describe_slice(train, train_first, train_last)}")
    else:
        info("Ign F1 not computed: give --train with the training split")
    if "dev_revised" in gold.name and (gold_first is not None or gold_last is not None):
        info("note: a slice of Re-DocRED dev (redocred-small) is not comparable with published "
             "Re-DocRED test figures")
    text = json.dumps(scores, indent=2)
    if output is not None:
        write_atomic(output, text + "\n")
    print(text)

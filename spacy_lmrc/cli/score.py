"""``spacy-lmrc score``: the official DocRED scorer (+ Ign, intra/inter, per relation, pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..corpus.io import load_json_records
from ..errors import InputError
from ..metrics import gold_from_doc, score_docred, train_facts_from_docs
from ._app import app
from ._util import describe_slice, friendly_errors, info, load_docs


@app.command("score")
@friendly_errors
def score_cli(
    gold: Path = typer.Option(..., "--gold", help="Gold DocRED JSON or .spacy file"),
    pred: Path = typer.Option(..., "--pred", help="Predictions in the official result.json format"),
    train: Path | None = typer.Option(
        None, "--train", help="Training split (JSON or .spacy) whose facts Ign F1 ignores"),
    gold_first: int | None = typer.Option(None, "--gold-first", help="Gold: first N documents"),
    gold_last: int | None = typer.Option(None, "--gold-last", help="Gold: then last N documents"),
    train_first: int | None = typer.Option(None, "--train-first", help="Train: first N documents"),
    train_last: int | None = typer.Option(None, "--train-last", help="Train: then last N"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the JSON here"),
) -> None:
    """Score a result.json: P/R/F1, Ign F1, intra/inter F1, per-relation and pair-level scores.

    Prints JSON (fractions in [0, 1]) on stdout and what was evaluated on stderr.
    """
    gold_docs, _ = load_docs(gold, first=gold_first, last=gold_last)
    predictions = load_json_records(pred)
    for i, p in enumerate(predictions):
        if not isinstance(p, dict) or not {"title", "h_idx", "t_idx", "r"} <= set(p):
            raise InputError("expected an object with title, h_idx, t_idx and r",
                             path=pred, index=i, field="title/h_idx/t_idx/r")
    train_facts = None
    if train is not None:
        train_docs, _ = load_docs(train, first=train_first, last=train_last)
        train_facts = train_facts_from_docs(train_docs)
    scores = score_docred([gold_from_doc(doc) for doc in gold_docs], predictions, train_facts)
    counts = scores["counts"]
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
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf8")

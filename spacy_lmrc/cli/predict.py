"""``spacy-lmrc predict``: run a pipeline over a corpus and write its predictions.

Document-level input (DocRED JSON, or a ``.spacy`` file of multi-entity documents) gives the
official ``result.json`` list; sentence-level input (SemEval, TACRED, or a ``.spacy`` file of
two-entity sentences) gives JSONL records ``{"index", "id", "relation"}`` in input order, where
``index`` counts the sentences read (from 0) and ``relation`` is the predicted label of the
(e1, e2) pair, the negative label when there is none.

The report on stderr gives each component's counts, and names every document longer than the
LLM's context: how many windows of its sentences its pairs were asked in, and the pairs that
fit no window.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from tqdm import tqdm

from ..corpus import docs_to_result, sentence_label
from ..corpus.readers import input_copy
from ..corpus.sentence import SEMEVAL_NEGATIVE, TACRED_NEGATIVE
from ..metrics.sentence import score_labels
from ..tasks.lmrc.windows import describe_windowed
from ._app import app
from ._util import (
    check_output,
    count_or_null,
    describe_slice,
    detect_format,
    friendly_errors,
    info,
    load_docs,
    timed,
    write_atomic,
)
from .extract import load_pipeline


@app.command("predict")
@friendly_errors
@timed
def predict_cli(
    pipeline: Path = typer.Argument(..., help="Pipeline folder (nlp.to_disk) or package name"),
    input_path: Path = typer.Argument(..., help="DocRED, SemEval or TACRED JSON, or .spacy"),
    output_path: Path = typer.Argument(..., help="result.json (documents) or .jsonl (sentences)"),
    level: str = typer.Option("auto", "--level",
                              help="auto, document or sentence (auto: by input format)"),
    negative_label: str | None = typer.Option(
        None, "--negative-label",
        help="Sentence level: label written for no relation (default Other / no_relation)"),
    batch_size: int = typer.Option(8, "--batch-size", help="Docs per nlp.pipe batch"),
    score: bool = typer.Option(False, "--score",
                               help="Sentence level: print micro P/R/F1 against the input labels"),
    fmt: str = typer.Option("auto", "--format", help="auto, spacy, docred, semeval or tacred"),
    first: int | None = typer.Option(None, "--first", parser=count_or_null,
                                     help="Only the first N documents"),
    last: int | None = typer.Option(None, "--last", parser=count_or_null,
                                    help="Then only the last N documents"),
    relations: Path | None = typer.Option(None, "--relations", help="SemEval labels file"),
    label_names: Path | None = typer.Option(None, "--label-names",
                                            help="SemEval label names (relations.json)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count bad records"),
) -> None:
    """Predict relations with a saved pipeline (gold relations in the input are ignored).

    The input may lack labels; the output is written atomically once all documents are done.
    """
    check_output(output_path)
    nlp = load_pipeline(str(pipeline))
    fmt = detect_format(input_path) if fmt == "auto" else fmt
    gold_docs, report = load_docs(input_path, nlp, fmt=fmt, first=first, last=last,
                                  skip_invalid=skip_invalid, relations_path=relations,
                                  label_names_path=label_names)
    if level == "auto":
        sentence_level = fmt in ("semeval", "tacred") or (
            fmt == "spacy" and all(len(d._.entities) == 2 for d in gold_docs))
    elif level in ("document", "sentence"):
        sentence_level = level == "sentence"
    else:
        raise typer.BadParameter(f"--level must be auto, document or sentence, not {level!r}")
    info(f"predicting {len(gold_docs)} documents of {describe_slice(input_path, first, last)} "
         f"with {pipeline} ({', '.join(nlp.pipe_names)}); skipped {len(report)} invalid")
    start = time.perf_counter()
    docs = list(tqdm(nlp.pipe((input_copy(d) for d in gold_docs), batch_size=batch_size),
                     total=len(gold_docs), desc="predict", unit="doc"))
    seconds = time.perf_counter() - start
    if sentence_level:
        negative = negative_label or (TACRED_NEGATIVE if fmt == "tacred" else SEMEVAL_NEGATIVE)
        predicted = [sentence_label(doc, negative) for doc in docs]
        write_atomic(output_path, "".join(
            json.dumps({"index": i, "id": doc._.title, "relation": label}) + "\n"
            for i, (doc, label) in enumerate(zip(docs, predicted))))
        if score:
            gold = [sentence_label(doc, negative) for doc in gold_docs]
            scores = score_labels(gold, predicted, negative, semeval=fmt == "semeval")
            scores.pop("per_label")
            print(json.dumps(scores, indent=2))
    else:
        write_atomic(output_path, json.dumps(docs_to_result(docs), indent=2) + "\n")
    for name, component in nlp.pipeline:
        stats = getattr(component, "stats", None)
        if stats is not None and hasattr(stats, "to_dict"):
            info(f"{name} answer parsing: {stats.to_dict()}")
        _report_context(name, component)
    info(f"wrote {output_path} ({len(docs)} documents, {seconds / max(len(docs), 1):.3f} s per "
         f"document)")


def _report_context(name: str, component: object) -> None:
    """Name the documents ``component`` asked over windows (too long for the LLM's context) and
    count the requests its backend refused as too long."""
    windowed = getattr(component, "windowed", None) or []
    stats = getattr(component, "stats", None)
    total = stats.counts.get("windowed_documents", 0) if hasattr(stats, "counts") else 0
    if windowed:
        info(f"{name}: {total} documents longer than the LLM's context were asked over windows "
             "of their sentences:")
        for entry in windowed:
            info(f"  {describe_windowed(entry)}")
        if total > len(windowed):
            info(f"  ... and {total - len(windowed)} more")
    refused = (getattr(component, "usage", None) or {}).get("refused_over_context", 0)
    if refused:
        info(f"{name}: {refused} requests were longer than the LLM's context and refused: "
             "their pairs are unanswered")

"""``spacy-lmrc evaluate``: run a pipeline on a gold corpus and score it, saying what was scored.

The full scores (per relation, intra/inter, component statistics) go to ``--output`` as JSON;
the terminal gets a short table. A trained proposer folder (``training/proposer/model-best``)
is evaluated as a one-component pipeline: candidate-pair P/R/F1 and the kept fraction. With
``--gold-pairs`` the relation classifier gets the gold entity pairs instead of the proposer's
(LMRC Table 5's RC-only ablation), and top-1 accuracy on those pairs is reported. With
``--from-text`` the documents go in as plain text and the pipeline finds its own entities
(:mod:`spacy_lmrc.cli.evaluate_text`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from tqdm import tqdm

from ..corpus import docs_to_result
from ..corpus.readers import input_copy
from ..corpus.sentence import sentence_label
from ..errors import InputError
from ..metrics import (
    candidate_pair_scores,
    gold_from_doc,
    score_docred,
    score_labels,
    train_facts_from_docs,
)
from ..metrics.classification import multi_relation_scores, top1_accuracy
from ..proposer.model import is_rcp_folder
from ._app import app
from ._util import (
    check_output,
    describe_slice,
    first_option,
    friendly_errors,
    info,
    label_names_option,
    last_option,
    load_docs,
    relations_option,
    timed,
    write_atomic,
)
from .compare import DOC_COLUMNS, SENT_COLUMNS, percent
from .evaluate_text import evaluate_from_text
from .extract import load_pipeline

PROPOSER = "lmrc_candidate_proposer"
PAIR_COLUMNS = [("P", "precision"), ("R", "recall"), ("F1", "f1"), ("kept", "kept_fraction")]


def load_evaluated(pipeline: str, device: str) -> Language:
    """The pipeline to evaluate: a spaCy pipeline, or a trained proposer folder on its own."""
    if is_rcp_folder(pipeline) and not (Path(pipeline) / "config.cfg").exists():
        nlp = spacy.blank("en")
        nlp.add_pipe(PROPOSER, config={"model": str(pipeline), "device": device})
        return nlp
    return load_pipeline(pipeline)


def with_gold_pairs(doc, gold):
    """``doc`` with the gold entity pairs of ``gold`` as its relation candidates."""
    doc._.relation_candidates = [{"head": h, "tail": t, "score": 1.0} for h, t in
                                 sorted({(r["head"], r["tail"]) for r in gold._.relations})]
    return doc


def summary_table(scores: dict[str, Any], components: list[str], sentence_level: bool) -> str:
    """A few lines for the terminal: the headline scores of each scored level, and the speed."""
    rows: list[list[str]] = []
    if sentence_level:
        columns = [c for c in SENT_COLUMNS if c[1] in scores]
        rows = [["", *[c for c, _ in columns]],
                ["labels", *[percent(scores.get(key)) for _, key in columns]]]
    else:
        if components != [PROPOSER]:
            rows = [["", *[c for c, _ in DOC_COLUMNS]],
                    ["relations", *[percent(scores.get(key)) for _, key in DOC_COLUMNS]]]
        if "top1" in scores:
            rows.append(["gold pairs: top-1", percent(scores["top1"]["top1"])])
        if "candidates" in scores:
            pairs = scores["candidates"]
            rows += [["", *[c for c, _ in PAIR_COLUMNS]],
                     ["candidate pairs", *[percent(pairs.get(key)) for _, key in PAIR_COLUMNS]]]
    widths = [max(len(row[i]) for row in rows if i < len(row))
              for i in range(max(len(row) for row in rows))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    evaluated = scores["evaluated"]
    lines.append(f"(scores in %) {evaluated['documents']} documents in {scores['seconds']:.1f} s: "
                 f"{scores['docs_per_second']:.2f} docs/s")
    return "\n".join(lines)


def _pipe_stats(nlp) -> dict[str, Any]:
    """Parse counts and other run statistics that components expose as ``stats``."""
    stats = {}
    for name, pipe in nlp.pipeline:
        value = getattr(pipe, "stats", None)
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if isinstance(value, dict):
            stats[name] = value
    return stats


@app.command("evaluate")
@friendly_errors
@timed
def evaluate_cli(
    pipeline: str = typer.Argument(..., help="Pipeline folder or installed package"),
    data: Path = typer.Argument(..., help="Gold corpus: DocRED JSON, SemEval/TACRED JSON, .spacy"),
    first: int | None = first_option(),
    last: int | None = last_option(),
    train: Path | None = typer.Option(None, "--train", help="Training split for Ign F1"),
    train_first: int | None = first_option("--train-first", "training documents"),
    train_last: int | None = last_option("--train-last", "training documents"),
    sentence_level: bool = typer.Option(
        False, "--sentence-level", help="One-pair sentence Docs: micro P/R/F1 of labels"),
    negative_label: str = typer.Option("Other", "--negative-label", help="Sentence level: NA"),
    semeval: bool = typer.Option(False, "--semeval", help="Sentence level: SemEval macro-F1"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the scores (JSON)"),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="Write predictions (result.json, or JSONL at sentence level)"),
    batch_size: int | None = typer.Option(
        None, "--batch-size",
        help="Documents per nlp.pipe batch (default: 1 for documents, so progress moves after "
             "each; the pipeline's batch size for sentences, which are decoded together)"),
    device: str = typer.Option("cpu", "--device", help="Proposer folder: cpu, cuda or cuda:N"),
    relations: Path | None = relations_option(),
    label_names: Path | None = label_names_option(),
    gold_pairs: bool = typer.Option(
        False, "--gold-pairs",
        help="RC-only ablation: classify the gold entity pairs (the proposer is not run)"),
    from_text: bool = typer.Option(
        False, "--from-text",
        help="Documents as plain text: the pipeline finds its own entities (NER, grouping, "
             "relations and the stage each gold relation was lost at)"),
) -> None:
    """Predict on DATA with PIPELINE (a pipeline or a trained proposer folder) and score it.

    Prints a short table; the full scores and what was evaluated go to --output (JSON).
    """
    started = time.perf_counter()
    for path in (output, predictions):
        if path is not None:
            check_output(path)
    if from_text:
        check_from_text_options(sentence_level, gold_pairs)
        evaluate_from_text(pipeline, data, first=first, last=last, train=train,
                           train_first=train_first, train_last=train_last, output=output,
                           predictions=predictions, batch_size=batch_size,
                           component_stats=_pipe_stats)
        return
    gold_docs, report = load_docs(data, first=first, last=last, relations_path=relations,
                                  label_names_path=label_names, require_labels=True,
                                  unique_titles=True)
    nlp = load_evaluated(pipeline, device)
    if batch_size is None:
        batch_size = nlp.batch_size if sentence_level else 1
    pred_docs, seconds = predict_docs(nlp, gold_docs, gold_pairs, batch_size)
    scores = run_summary(pipeline, nlp, gold_docs, seconds, gold_pairs=gold_pairs,
                         data=describe_slice(data, first, last), skipped_invalid=len(report),
                         train_facts_from=describe_slice(train, train_first, train_last)
                         if train else None)
    if sentence_level:
        level_scores, prediction_text = score_sentences(gold_docs, pred_docs, negative_label,
                                                        semeval)
    else:
        train_facts = load_train_facts(train, train_first, train_last)
        level_scores, prediction_text = score_documents(gold_docs, pred_docs, train_facts,
                                                        gold_pairs, nlp.pipe_names)
    scores.update(level_scores)
    print(summary_table(scores, nlp.pipe_names, sentence_level))
    print_caveats(data, train, sentence_level, nlp.pipe_names)
    written = write_outputs([(output, json.dumps(scores, indent=2) + "\n"),
                             (predictions, prediction_text)])
    info(f"evaluated {pipeline} on {describe_slice(data, first, last)}; wrote "
         f"{', '.join(written) or 'nothing (give -o FILE for the full scores)'} in "
         f"{time.perf_counter() - started:.1f} s")


def run_summary(pipeline: str, nlp: Language, gold_docs: list[Doc], seconds: float, *,
                gold_pairs: bool, data: str, skipped_invalid: int,
                train_facts_from: str | None) -> dict[str, Any]:
    """What was evaluated (pipeline, pairs, data slice, training facts), how fast, and the
    components' run statistics: the part of the scores file that says what the figures mean."""
    return {
        "evaluated": {
            "pipeline": str(pipeline), "components": nlp.pipe_names,
            "pairs": "gold" if gold_pairs else "predicted",
            "data": data, "documents": len(gold_docs),
            "skipped_invalid": skipped_invalid,
            "train_facts_from": train_facts_from,
        },
        "seconds": seconds,
        "seconds_per_document": seconds / max(len(gold_docs), 1),
        "docs_per_second": len(gold_docs) / seconds if seconds else 0.0,
        "component_stats": _pipe_stats(nlp),
    }


def load_train_facts(train: Path | None, first: int | None, last: int | None) -> Any:
    """The training facts Ign F1 leaves out, from the ``--train`` slice (None without one)."""
    if train is None:
        return None
    train_docs, _ = load_docs(train, first=first, last=last, require_labels=True)
    return train_facts_from_docs(train_docs)


def print_caveats(data: Path, train: Path | None, sentence_level: bool,
                  components: list[str]) -> None:
    """Say what the figures leave out or cannot be compared with."""
    if not sentence_level and not train and components != [PROPOSER]:
        info("no --train: Ign F1 not computed")
    if "dev_revised" in data.name:
        info("note: figures on redocred-small or redocred-medium (dev = documents of "
             "dev_revised.json) are not comparable with published Re-DocRED results")


def write_outputs(outputs: list[tuple[Path | None, str]]) -> list[str]:
    """Write each (path, content) whose path was given; the paths written."""
    written = []
    for path, content in outputs:
        if path is not None:
            write_atomic(path, content)
            written.append(str(path))
    return written


def check_from_text_options(sentence_level: bool, gold_pairs: bool) -> None:
    """--from-text evaluates documents with predicted entities: no sentence level, no gold
    pairs (they name gold entities)."""
    for given, flag in ((sentence_level, "--sentence-level"), (gold_pairs, "--gold-pairs")):
        if given:
            raise InputError(f"--from-text cannot be combined with {flag}: it scores "
                             f"documents whose entities the pipeline finds itself")


def predict_docs(nlp: Language, gold_docs: list[Doc], gold_pairs: bool,
                 batch_size: int) -> tuple[list[Doc], float]:
    """The pipeline's Docs for unannotated copies of ``gold_docs`` and the seconds it took;
    with ``gold_pairs`` the gold entity pairs replace the proposer."""
    inputs = (input_copy(doc) for doc in gold_docs)
    disabled = []
    if gold_pairs:
        inputs = (with_gold_pairs(doc, gold) for doc, gold in zip(inputs, gold_docs))
        disabled = [name for name in nlp.pipe_names if name == PROPOSER]
    start = time.perf_counter()
    with nlp.select_pipes(disable=disabled):
        stream = nlp.pipe(inputs, batch_size=batch_size)
        pred_docs = list(tqdm(stream, total=len(gold_docs), desc="evaluate", unit="doc"))
    return pred_docs, time.perf_counter() - start


def score_sentences(gold_docs: list[Doc], pred_docs: list[Doc], negative_label: str,
                    semeval: bool) -> tuple[dict[str, Any], str]:
    """Label scores of one-pair sentence Docs, and the predictions as JSONL."""
    gold = [sentence_label(d, negative_label) for d in gold_docs]
    pred = [sentence_label(d, negative_label) for d in pred_docs]
    lines = [json.dumps({"index": i, "relation": p}) for i, p in enumerate(pred)]
    return (score_labels(gold, pred, negative_label, semeval=semeval),
            "".join(line + "\n" for line in lines))


def score_documents(gold_docs: list[Doc], pred_docs: list[Doc], train_facts: Any,
                    gold_pairs: bool, components: list[str]) -> tuple[dict[str, Any], str]:
    """DocRED scores (with top-1 on gold pairs, or the candidate pairs when a proposer ran),
    and the predictions as DocRED ``result.json``."""
    result = docs_to_result(pred_docs)
    scores = score_docred([gold_from_doc(d) for d in gold_docs], result, train_facts)
    scores["multi_relation"] = multi_relation_scores(pred_docs, gold_docs)
    if gold_pairs:
        scores["top1"] = top1_accuracy(pred_docs, gold_docs)
    elif PROPOSER in components or any(d._.relation_candidates for d in pred_docs):
        examples = [Example(pred, ref) for pred, ref in zip(pred_docs, gold_docs)]
        scores["candidates"] = candidate_pair_scores(examples)
    return scores, json.dumps(result)

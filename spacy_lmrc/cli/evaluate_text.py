"""``spacy-lmrc evaluate --from-text``: the raw-text pipeline scored end to end.

Each gold document is given to the pipeline as plain text (its words joined by spaces: no
tokens, sentences or entities), so its NER, ``lmrc_entity_grouper``, proposer and classifier
all run on their own output. The report (:mod:`spacy_lmrc.metrics.text_eval`):

* NER: typed mention P/R/F1, per DocRED type, and untyped (span only);
* grouping: B-cubed and link P/R/F1 on the mentions found, and of the grouping rules alone on
  the gold mentions;
* entities: gold entities mapped, missed, merged and split by the one-to-one alignment;
* relations (when the pipeline extracts them): the official scores of the predictions mapped
  to gold entities, comparable with ``evaluate`` on gold entities (``spacy-lmrc compare``),
  and the stage each gold relation was lost at;
* the time of every stage (tokenizer and components) in documents per second.

A pipeline that only recognises entities (``spacy train configs/ner.cfg``'s model-best, or
en_core_web_sm) is evaluated as a front end: ``lmrc_entity_grouper`` is added after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from ..errors import InputError
from ..metrics import score_docred, train_facts_from_docs
from ..metrics.docred import gold_from_doc
from ..metrics.entities import grouping_on_gold_mentions, grouping_scores, ner_scores
from ..metrics.text_eval import entity_mapping_scores, loss_table, text_relation_scores
from ._util import describe_slice, info, load_docs, write_atomic
from .compare import DOC_COLUMNS, percent
from .extract import load_pipeline

GROUPER = "lmrc_entity_grouper"
RELATION_OUTPUTS = ("doc._.relations", "doc._.relation_candidates")


def _assigning(nlp: Language, attribute: str) -> list[str]:
    """The components of ``nlp`` whose factory declares that it assigns ``attribute``."""
    return [name for name in nlp.pipe_names if attribute in nlp.get_pipe_meta(name).assigns]


def text_pipeline(pipeline: str) -> tuple[Language, list[str]]:
    """The pipeline to evaluate on plain text, and notes on what was added to it.

    It needs a component that finds entity mentions (``doc.ents``) and ``lmrc_entity_grouper``
    after it; a NER-only pipeline gets the grouper appended.
    """
    nlp = load_pipeline(pipeline)
    notes: list[str] = []
    if GROUPER not in nlp.pipe_names:
        if not _assigning(nlp, "doc.ents"):
            raise InputError(f"--from-text needs a pipeline that finds entities in text (a ner, "
                             f"then {GROUPER}); its components are {nlp.pipe_names}",
                             path=pipeline)
        if any(_assigning(nlp, attr) for attr in RELATION_OUTPUTS):
            raise InputError(f"the pipeline has no {GROUPER} to turn its NER mentions into "
                             f"doc._.entities before its relation components; assemble it "
                             f"with configs/raw_text.cfg", path=pipeline)
        nlp.add_pipe(GROUPER)
        notes.append(f"added {GROUPER} (NER labels mapped to DocRED types) after "
                     f"{nlp.pipe_names[-2]}")
    return nlp, notes


def run_stages(nlp: Language, texts: list[str], titles: list[str], batch_size: int
               ) -> tuple[list[Doc], dict[str, float]]:
    """Docs for ``texts`` through the whole pipeline, one stage at a time, and the seconds
    each stage (the tokenizer, then every component) took."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    docs = [nlp.make_doc(text) for text in texts]
    seconds["tokenizer"] = time.perf_counter() - start
    for doc, title in zip(docs, titles):
        doc._.title = title
    for name, proc in nlp.pipeline:
        start = time.perf_counter()
        stream = proc.pipe(docs, batch_size=batch_size) if hasattr(proc, "pipe") \
            else (proc(doc) for doc in docs)
        docs = list(tqdm(stream, total=len(docs), desc=name, unit="doc", leave=False))
        seconds[name] = time.perf_counter() - start
    return docs, seconds


def score_text_run(nlp: Language, gold_docs: list[Doc], pred_docs: list[Doc],
                   train_docs: list[Doc] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """NER, grouping and entity scores, and with relation components the official relation
    scores and the stage losses; and the predictions as result.json records in gold entity
    indices."""
    grouper = nlp.get_pipe(GROUPER)
    scores: dict[str, Any] = {
        "ner": ner_scores(gold_docs, pred_docs),
        "grouping": {
            "predicted_mentions": grouping_scores(gold_docs, pred_docs),
            "gold_mentions": grouping_on_gold_mentions(gold_docs, grouper.type_map,
                                                       grouper.merge_person_names,
                                                       grouper.type_vote),
        },
    }
    proposer_ran = bool(_assigning(nlp, "doc._.relation_candidates"))
    records, losses, entity_counts = text_relation_scores(gold_docs, pred_docs, proposer_ran)
    scores["entities"] = entity_mapping_scores(entity_counts)
    if _assigning(nlp, "doc._.relations"):
        train_facts = train_facts_from_docs(train_docs) if train_docs is not None else None
        scores.update(score_docred([gold_from_doc(d) for d in gold_docs], records, train_facts))
        scores["losses"] = loss_table(losses)
        scores["proposer_ran"] = proposer_ran
    return scores, records


def _table(rows: list[list[str]]) -> list[str]:
    """Rows as aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows if i < len(row))
              for i in range(max(len(row) for row in rows))]
    return ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def text_report(scores: dict[str, Any]) -> str:
    """The terminal report of :func:`score_text_run` plus timing, as aligned tables."""
    prf_columns = ["P", "R", "F1"]

    def prf_row(label: str, s: dict[str, Any], *extra: str) -> list[str]:
        return [label, *[percent(s[k]) for k in ("precision", "recall", "f1")], *extra]

    ner = scores["ner"]
    rows = [["mentions (NER)", *prf_columns, "gold"],
            prf_row("typed", ner, str(ner["counts"]["gold"])),
            prf_row("untyped (span only)", ner["untyped"], "")]
    rows += [prf_row(f"  {label}", s, str(s["support"])) for label, s in ner["per_type"].items()]
    grouping = scores["grouping"]
    rows += [["entities", *prf_columns, "mentions"]]
    for key, label in (("predicted_mentions", "found mentions"),
                       ("gold_mentions", "gold mentions")):
        rows.append(prf_row(f"B-cubed, {label}", grouping[key]["bcubed"],
                            str(grouping[key]["bcubed"]["mentions"])))
        rows.append(prf_row(f"links, {label}", grouping[key]["pairwise"], ""))
    rows.append(prf_row("aligned to gold (1:1)", scores["entities"], ""))
    lines = _table(rows)
    counts = scores["entities"]["counts"]
    lines.append(f"gold entities: {counts.get('gold mapped', 0)} mapped, "
                 f"{counts.get('gold missed', 0)} missed, {counts.get('gold merged', 0)} merged "
                 f"into another, {counts.get('gold split', 0)} split; predicted entities: "
                 f"{counts.get('predicted unmapped', 0)} not mapped to any gold entity")
    if "losses" in scores:
        lines.append("")
        lines += _table([["", *[c for c, _ in DOC_COLUMNS]],
                         ["relations", *[percent(scores.get(k)) for _, k in DOC_COLUMNS]]])
        gold_facts = scores["counts"]["gold_facts"]
        loss_rows = [[f"gold relations ({gold_facts})", "count", "share"]]
        loss_rows += [[stage, str(s["count"]), percent(s["fraction"])]
                      for stage, s in scores["losses"].items()]
        lines += [""] + _table(loss_rows)
        if not scores["proposer_ran"]:
            lines.append("(no candidate proposer: the classifier saw every pair)")
    stages = scores["stages"]
    lines += [""] + _table([["stage", "seconds", "docs/s"]] + [
        [name, f"{s['seconds']:.2f}", f"{s['docs_per_second']:.1f}"] for name, s in stages.items()])
    lines.append(f"(scores in %) {scores['evaluated']['documents']} documents from plain text in "
                 f"{scores['seconds']:.1f} s: {scores['docs_per_second']:.2f} docs/s")
    return "\n".join(lines)


def evaluate_from_text(
    pipeline: str, data: Path, *, first: int | None, last: int | None, train: Path | None,
    train_first: int | None, train_last: int | None, output: Path | None,
    predictions: Path | None, batch_size: int | None,
    component_stats: Callable[[Language], dict[str, Any]],
) -> None:
    """Run PIPELINE on the plain text of DATA's documents, print the report and write the
    scores (``output``) and the predictions in gold entity indices (``predictions``)."""
    gold_docs, report = load_docs(data, first=first, last=last, require_labels=True,
                                  unique_titles=True)
    nlp, notes = text_pipeline(pipeline)
    if predictions is not None and not _assigning(nlp, "doc._.relations"):
        raise InputError("--predictions: the pipeline extracts no relations (its components "
                         f"are {nlp.pipe_names})", path=pipeline)
    for note in notes:
        info(note)
    train_docs = None
    if train is not None:
        train_docs, _ = load_docs(train, first=train_first, last=train_last,
                                  require_labels=True)
    pred_docs, stage_seconds = run_stages(nlp, [d.text for d in gold_docs],
                                          [d._.title for d in gold_docs],
                                          batch_size or nlp.batch_size)
    scores, result = score_text_run(nlp, gold_docs, pred_docs, train_docs)
    seconds = sum(stage_seconds.values())
    n = len(gold_docs)
    scores.update({
        "evaluated": {
            "pipeline": str(pipeline), "components": nlp.pipe_names, "added": notes,
            "input": "plain text (each document's words joined by spaces)",
            "entities": "predicted, aligned 1:1 to gold entities by mention overlap",
            "data": describe_slice(data, first, last), "documents": n,
            "skipped_invalid": len(report),
            "train_facts_from": describe_slice(train, train_first, train_last) if train else None,
        },
        "seconds": seconds, "seconds_per_document": seconds / max(n, 1),
        "docs_per_second": n / seconds if seconds else 0.0,
        "stages": {name: {"seconds": s, "docs_per_second": n / s if s else 0.0}
                   for name, s in stage_seconds.items()},
        "component_stats": component_stats(nlp),
    })
    print(text_report(scores))
    if "losses" in scores and train is None:
        info("no --train: Ign F1 not computed")
    if "dev_revised" in data.name:
        info("note: redocred-small or -medium figures are not comparable with published "
             "Re-DocRED results")
    written = []
    for path, content in ((output, json.dumps(scores, indent=2) + "\n"),
                          (predictions, json.dumps(result))):
        if path is not None:
            write_atomic(path, content)
            written.append(str(path))
    info(f"evaluated {pipeline} on the plain text of {describe_slice(data, first, last)}; wrote "
         f"{', '.join(written) or 'nothing (give -o FILE for the full scores)'}")

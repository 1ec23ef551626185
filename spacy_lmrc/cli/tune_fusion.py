"""``spacy-lmrc tune-fusion``: choose how a pipeline fuses the proposer's and the LLM's scores.

The pipeline runs once over dev with its relation classifier keeping every relation the LLM
found probable (the task's ``min_probability``), each with its three stage scores; each fusion
of :mod:`spacy_lmrc.fusion` is then fitted on them with its F1-best threshold, and the one with
the best cross-fitted F1 (fitted on half the documents, scored on the other half) is stored
in the task of the pipeline written to ``--output``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from spacy.language import Language
from spacy.tokens import Doc

from ..errors import InputError
from ..fusion import FUSION_KINDS, LLMScore, RelationScores, ScoredRelation, tune_fusion
from ._app import app
from ._util import (
    check_output,
    describe_slice,
    first_option,
    friendly_errors,
    info,
    last_option,
    load_docs,
    timed,
)
from .evaluate import predict_docs, write_outputs
from .extract import load_pipeline


def fused_task(nlp: Language) -> Any:
    """The task of the pipeline's relation classifier (the component whose task fuses)."""
    from ..pipeline.relation_classifier import RelationClassifier
    from ..tasks.lmrc import LMRCTask

    for _, pipe in nlp.pipeline:
        if isinstance(pipe, RelationClassifier) and isinstance(pipe.task, LMRCTask):
            return pipe.task
    raise InputError(f"the pipeline has no relation classifier with a fused score (components: "
                     f"{', '.join(nlp.pipe_names)}); it needs spacy_lmrc.LMRCTask.v1 or "
                     "LMRCBaselineTask")


def scored_relations(pred_docs: list[Doc], gold_docs: list[Doc]
                     ) -> tuple[list[ScoredRelation], dict[int, int]]:
    """Every predicted relation with its stage scores and whether it is a gold fact, and the
    number of gold facts of each document."""
    items, gold_per_doc = [], {}
    for index, (pred, gold) in enumerate(zip(pred_docs, gold_docs)):
        facts = {(r["head"], r["tail"], r["label"]) for r in gold._.relations}
        gold_per_doc[index] = len(facts)
        for rel in pred._.relations:
            if "scores" not in rel:
                raise InputError(f"document {index} ({gold._.title!r}): a predicted relation "
                                 "has no stage scores", field="relations[].scores")
            items.append(ScoredRelation(index, RelationScores.from_dict(rel["scores"]),
                                        (rel["head"], rel["tail"], rel["label"]) in facts))
    return items, gold_per_doc


def fusion_table(rows: list[dict[str, Any]], chosen: str) -> str:
    """One line per fusion: dev P/R/F1 at its threshold, and its cross-fitted F1."""
    lines = [f"{'fusion':10} {'threshold':>9} {'P':>6} {'R':>6} {'F1':>6} {'cross-fit F1':>12}"]
    for row in rows:
        mark = "  <- stored" if row["fusion"] == chosen else ""
        cross = row["cross_fitted_f1"]
        cross_text = "-" if cross is None else f"{100 * cross:.2f}"
        lines.append(f"{row['fusion']:10} {row['config']['threshold']:9.4f} "
                     f"{100 * row['p']:6.2f} {100 * row['r']:6.2f} {100 * row['f1']:6.2f} "
                     f"{cross_text:>12}{mark}")
    return "\n".join(lines)


@app.command("tune-fusion")
@friendly_errors
@timed
def tune_fusion_cli(
    pipeline: str = typer.Argument(..., help="Pipeline folder (proposer + relation classifier)"),
    data: Path = typer.Argument(..., help="Dev corpus with gold relations (DocRED JSON, .spacy)"),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the tuned pipeline"),
    first: int | None = first_option(),
    last: int | None = last_option(),
    report: Path | None = typer.Option(None, "--report", help="Write the table as JSON"),
    kinds: str = typer.Option(",".join(FUSION_KINDS), "--fusions",
                              help="Fusions to compare, comma-separated"),
) -> None:
    """Fit each fusion of the proposer's and the LLM's scores on dev, store the best one.

    Dev figures of the stored fusion are optimistic (chosen on the same documents, as the
    proposer's threshold is): the cross-fitted F1 column says what to expect elsewhere.
    """
    check_output(output, folder=True)
    started = time.perf_counter()
    gold_docs, _ = load_docs(data, first=first, last=last, require_labels=True,
                             unique_titles=True)
    nlp = load_pipeline(pipeline)
    task = fused_task(nlp)
    if task.min_probability is None:
        info("note: the task decodes greedy answers only (min_probability null): the fusion "
             "can only drop relations, never add a relation the LLM ranked second")
    stored = task.fusion
    task.fusion = LLMScore(0.0)  # keep every relation the LLM decoded, with its scores
    pred_docs, seconds = predict_docs(nlp, gold_docs, gold_pairs=False, batch_size=1)
    items, gold_per_doc = scored_relations(pred_docs, gold_docs)
    described = describe_slice(data, first, last)
    rows: list[dict[str, Any]] = []
    if items:
        task.fusion, rows = tune_fusion(items, gold_per_doc,
                                        [k.strip() for k in kinds.split(",")])
        print(fusion_table(rows, task.fusion.kind))
    else:
        task.fusion = stored
        info(f"warning: the pipeline predicted no relation on {described}: nothing to fit a "
             f"fusion on, its {stored.kind} fusion is kept as it was")
    nlp.to_disk(output)
    write_outputs([(report, json.dumps({"data": described, "documents": len(gold_docs),
                                        "relations_scored": len(items),
                                        "gold_facts": sum(gold_per_doc.values()),
                                        "predict_seconds": seconds, "fusions": rows,
                                        "stored": task.fusion.config()}, indent=2) + "\n")])
    info(f"stored the {task.fusion.kind} fusion (threshold {task.fusion.threshold:.4f}) in "
         f"{output}; fitted on {len(items)} relations of {len(gold_docs)} documents of "
         f"{described} in {time.perf_counter() - started:.1f} s")

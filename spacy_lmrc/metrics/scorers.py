"""Scorers over spaCy Examples, for the components' ``scorer`` and ``nlp.evaluate``.

Keys are flat floats (spaCy's score weights need that) prefixed by what they measure:
``rel_*`` for document-level relations, ``cand_*`` for proposed candidate pairs, ``sent_*`` for
sentence-level labels, ``rag_*`` for retrieved examples. Examples are matched by position, so
Docs without titles score too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from spacy.training import Example
from spacy.util import registry

from ..corpus.sentence import SEMEVAL_NEGATIVE, sentence_label
from ..doc import ordered_pairs
from .docred import TrainFacts, gold_from_doc, pair_scores, score_docred, train_facts_from_docs
from .sentence import score_labels


def _keyed(examples: Iterable[Example]) -> list[tuple[str, Example]]:
    return [(str(i), eg) for i, eg in enumerate(examples)]


def score_relations(examples: Iterable[Example], train_facts: TrainFacts | None = None,
                    **_: Any) -> dict[str, Any]:
    """DocRED-style scores of ``doc._.relations`` (F1, Ign F1, intra/inter, per relation)."""
    golds, preds = [], []
    for key, eg in _keyed(examples):
        gold = gold_from_doc(eg.reference)
        gold.title = key
        golds.append(gold)
        preds += [{"title": key, "h_idx": r["head"], "t_idx": r["tail"], "r": r["label"]}
                  for r in eg.predicted._.relations]
    scores = score_docred(golds, preds, train_facts)
    return {
        "rel_p": scores["precision"],
        "rel_r": scores["recall"],
        "rel_f1": scores["f1"],
        "rel_ign_f1": scores["ign_f1"],
        "rel_intra_f1": scores["intra_f1"],
        "rel_inter_f1": scores["inter_f1"],
        "rel_f_per_type": {label: {"p": s["precision"], "r": s["recall"], "f": s["f1"]}
                           for label, s in scores["per_relation"].items()},
    }


def candidate_pair_scores(examples: Iterable[Example]) -> dict[str, Any]:
    """Pair-level P/R/F1 of ``doc._.relation_candidates`` against the gold pairs that hold a
    relation, the candidate space and the fraction of it kept (:func:`pair_scores`)."""
    gold_pairs, pred_pairs, space = set(), set(), 0
    for key, eg in _keyed(examples):
        gold_pairs |= {(key, r["head"], r["tail"]) for r in eg.reference._.relations}
        pred_pairs |= {(key, c["head"], c["tail"]) for c in eg.predicted._.relation_candidates}
        space += sum(1 for _ in ordered_pairs(eg.reference))
    return pair_scores(gold_pairs, pred_pairs, candidate_space=space)


def score_candidates(examples: Iterable[Example], **_: Any) -> dict[str, Any]:
    """Pair-level P/R/F1 of ``doc._.relation_candidates`` and the fraction of pairs kept."""
    scores = candidate_pair_scores(examples)
    return {
        "cand_p": scores["precision"],
        "cand_r": scores["recall"],
        "cand_f1": scores["f1"],
        "cand_kept_fraction": scores["kept_fraction"],
    }


def score_sentence_labels(examples: Iterable[Example], negative_label: str = "Other",
                          semeval: bool = False, **_: Any) -> dict[str, Any]:
    """Micro P/R/F1 without the negative label (and SemEval macro-F1) of one-pair Docs."""
    examples = list(examples)
    gold = [sentence_label(eg.reference, negative_label) for eg in examples]
    pred = [sentence_label(eg.predicted, negative_label) for eg in examples]
    scores = score_labels(gold, pred, negative_label, semeval=semeval)
    result = {"sent_micro_p": scores["precision"], "sent_micro_r": scores["recall"],
              "sent_micro_f1": scores["f1"]}
    if semeval:
        result["sent_semeval_macro_f1"] = scores["semeval_macro_f1"]
    return result


@registry.scorers("spacy_lmrc.relation_scorer.v1")
def make_relation_scorer(train_path: str | None = None, train_first: int | None = None,
                         train_last: int | None = None):
    """Scorer for ``doc._.relations``; with ``train_path`` (DocRED JSON) it reports Ign F1."""
    train_facts = None
    if train_path:
        from spacy.vocab import Vocab

        from ..corpus.docred import read_docred

        docs = read_docred(train_path, Vocab(), first=train_first, last=train_last)
        train_facts = train_facts_from_docs(docs)

    def scorer(examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        return score_relations(examples, train_facts=train_facts)

    return scorer


@registry.scorers("spacy_lmrc.candidate_scorer.v1")
def make_candidate_scorer():
    """Scorer for ``doc._.relation_candidates`` (pair-level P/R/F1, kept fraction)."""
    return score_candidates


@registry.scorers("spacy_lmrc.sentence_scorer.v1")
def make_sentence_scorer(negative_label: str = "Other", semeval: bool = False):
    """Scorer for one-pair sentence Docs: micro P/R/F1 without ``negative_label``."""

    def scorer(examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        return score_sentence_labels(examples, negative_label=negative_label, semeval=semeval)

    return scorer


def score_retrieval(examples: Iterable[Example], negative_label: str = SEMEVAL_NEGATIVE,
                    **_: Any) -> dict[str, Any]:
    """How often the top retrieved example carries the gold label, and the mean similarity.

    A diagnostic of the retrieval module alone: with the label shown in the prompt, top-1 label
    agreement is what a model that copies the example's label would score (accuracy, negatives
    included).
    """
    agree, total, sims = 0, 0, []
    for eg in examples:
        found = eg.predicted._.rag_examples
        if not found:
            continue
        total += 1
        agree += found[0]["label"] == sentence_label(eg.reference, negative_label)
        sims.append(found[0]["similarity"])
    return {"rag_top1_label_acc": agree / total if total else 0.0,
            "rag_mean_similarity": float(np.mean(sims)) if sims else 0.0}


@registry.scorers("spacy_lmrc.rag_scorer.v1")
def make_rag_scorer(negative_label: str = SEMEVAL_NEGATIVE) -> Callable:
    """Scorer of ``doc._.rag_examples``: top-1 label agreement and mean similarity."""

    def scorer(examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        return score_retrieval(examples, negative_label=negative_label)

    return scorer

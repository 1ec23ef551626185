"""Metrics: the official DocRED scorer (+ Ign, intra/inter, per-relation, pair level) and
sentence-level micro P/R/F1 and SemEval-2010 Task 8 macro-F1."""

from .docred import (
    GoldDocument,
    gold_from_doc,
    gold_from_record,
    pair_scores,
    prf,
    score_docred,
    train_facts_from_docs,
    train_facts_from_golds,
)
from .scorers import candidate_pair_scores, score_candidates, score_relations, score_sentence_labels
from .sentence import micro_prf, score_labels, semeval_macro_f1

__all__ = [
    "GoldDocument",
    "candidate_pair_scores",
    "gold_from_doc",
    "gold_from_record",
    "micro_prf",
    "pair_scores",
    "prf",
    "score_candidates",
    "score_docred",
    "score_labels",
    "score_relations",
    "score_sentence_labels",
    "semeval_macro_f1",
    "train_facts_from_docs",
    "train_facts_from_golds",
]

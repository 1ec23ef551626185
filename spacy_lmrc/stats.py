"""Corpus statistics (LMRC Table 1): documents, entities, candidate pairs, NA pairs, triples."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from spacy.tokens import Doc

from .doc import is_intra_sentence


def corpus_stats(docs: Iterable[Doc]) -> dict[str, Any]:
    """Counts over Docs; ``candidate_pairs`` is the ordered-pair space sum n(n-1)."""
    stats = dict.fromkeys(
        ["docs", "sentences", "tokens", "entities", "mentions", "candidate_pairs", "na_pairs",
         "relation_pairs", "triples", "intra_triples", "inter_triples", "max_tokens"], 0)
    labels: set[str] = set()
    for doc in docs:
        n = len(doc._.entities)
        pairs = {(r["head"], r["tail"]) for r in doc._.relations}
        triples = {(r["head"], r["tail"], r["label"]) for r in doc._.relations}
        intra = sum(1 for h, t, _ in triples if is_intra_sentence(doc, h, t))
        stats["docs"] += 1
        stats["sentences"] += sum(1 for _ in doc.sents)
        stats["tokens"] += len(doc)
        stats["max_tokens"] = max(stats["max_tokens"], len(doc))
        stats["entities"] += n
        stats["mentions"] += sum(len(e["mentions"]) for e in doc._.entities)
        stats["candidate_pairs"] += n * (n - 1)
        stats["relation_pairs"] += len(pairs)
        stats["triples"] += len(triples)
        stats["intra_triples"] += intra
        stats["inter_triples"] += len(triples) - intra
        labels |= {label for _, _, label in triples}
    stats["na_pairs"] = stats["candidate_pairs"] - stats["relation_pairs"]
    stats["relation_labels"] = len(labels)
    return stats

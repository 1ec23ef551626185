"""Entity metrics for raw-text input: typed mention NER and the grouping of mentions into
entities, against DocRED's gold mentions and entity clusters.

Mentions are identified by character offsets, so a pipeline that tokenizes the text its own way
is compared with the gold tokens fairly (a DocRED document's text is its words joined by spaces,
the same on both sides).

* :func:`ner_scores`: mention-level P/R/F1, typed (span and DocRED type both right) and per
  type, and untyped (span only). Gold = every gold mention (a span that two gold entities share
  with one type counts once); predicted = the mentions of ``doc._.entities``, i.e. after the
  grouper mapped the NER labels to DocRED types.
* :func:`bcubed` and :func:`pairwise_links`: how well mentions are clustered, on the mentions
  both sides have (exact span), so a missed or spurious mention is charged to the NER only.
* :func:`grouping_scores`: both, for predicted against gold Docs;
  :func:`grouping_on_gold_mentions`: the same for the grouping rules alone, run on the gold
  mentions with their gold types (no NER error can enter).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

from spacy.tokens import Doc, Span

from ..entities import group_mentions
from .docred import prf

MentionKey = tuple[int, int]  # (start_char, end_char) of a mention in the Doc's text


def entity_char_spans(doc: Doc) -> list[list[MentionKey]]:
    """Per entity of ``doc._.entities``, the character spans of its mentions (repeats dropped)."""
    spans = []
    for entity in doc._.entities:
        keys: list[MentionKey] = []
        for m in entity["mentions"]:
            key = (doc[m["start"]].idx, doc[m["end"] - 1].idx + len(doc[m["end"] - 1]))
            if key not in keys:
                keys.append(key)
        spans.append(keys)
    return spans


def typed_mentions(doc: Doc) -> set[tuple[int, int, str]]:
    """(start_char, end_char, entity type) of every mention of ``doc._.entities``."""
    types = [entity["type"] for entity in doc._.entities]
    return {(start, end, types[e]) for e, keys in enumerate(entity_char_spans(doc))
            for start, end in keys}


def ner_scores(golds: Sequence[Doc], preds: Sequence[Doc]) -> dict[str, Any]:
    """Typed mention P/R/F1 (micro), per type, and untyped span P/R/F1 over parallel Docs."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold Docs but {len(preds)} predicted Docs")
    gold_set: set[tuple[int, int, int, str]] = set()
    pred_set: set[tuple[int, int, int, str]] = set()
    for i, (gold, pred) in enumerate(zip(golds, preds)):
        gold_set |= {(i, *m) for m in typed_mentions(gold)}
        pred_set |= {(i, *m) for m in typed_mentions(pred)}
    correct = gold_set & pred_set
    scores: dict[str, Any] = prf(len(correct), len(pred_set), len(gold_set))
    per_type: dict[str, dict[str, Any]] = {}
    gold_by, pred_by = Counter(m[3] for m in gold_set), Counter(m[3] for m in pred_set)
    correct_by = Counter(m[3] for m in correct)
    for label in sorted(set(gold_by) | set(pred_by)):
        per_type[label] = {**prf(correct_by[label], pred_by[label], gold_by[label]),
                           "support": gold_by[label], "predicted": pred_by[label]}
    scores["per_type"] = per_type
    gold_spans, pred_spans = {m[:3] for m in gold_set}, {m[:3] for m in pred_set}
    scores["untyped"] = prf(len(gold_spans & pred_spans), len(pred_spans), len(gold_spans))
    scores["counts"] = {"gold": len(gold_set), "predicted": len(pred_set),
                        "correct": len(correct)}
    return scores


def _cluster_of(clusters: Iterable[Iterable[Hashable]]) -> tuple[dict[Hashable, int], int]:
    """Mention -> cluster index; a mention listed in two clusters stays in its first (counted)."""
    owner: dict[Hashable, int] = {}
    repeated = 0
    for c, cluster in enumerate(clusters):
        for mention in cluster:
            if mention in owner:
                repeated += owner[mention] != c
                continue
            owner[mention] = c
    return owner, repeated


def bcubed(pred: Sequence[Iterable[Hashable]], gold: Sequence[Iterable[Hashable]]
           ) -> dict[str, Any]:
    """B-cubed P/R/F1 of ``pred`` clusters against ``gold`` clusters (lists of mention keys).

    Scored on the mentions both sides contain: per mention, precision is the share of its
    predicted cluster that is in its gold cluster, recall the share of its gold cluster that
    is in its predicted cluster; both averaged over mentions. ``mentions`` says how many were
    scored, ``gold_only`` / ``predicted_only`` how many were left out.
    """
    pred_of, _ = _cluster_of(pred)
    gold_of, gold_repeated = _cluster_of(gold)
    shared = [m for m in gold_of if m in pred_of]
    pred_members: Counter[int] = Counter(pred_of[m] for m in shared)
    gold_members: Counter[int] = Counter(gold_of[m] for m in shared)
    both: Counter[tuple[int, int]] = Counter((pred_of[m], gold_of[m]) for m in shared)
    p_sum = r_sum = 0.0
    for m in shared:
        common = both[(pred_of[m], gold_of[m])]
        p_sum += common / pred_members[pred_of[m]]
        r_sum += common / gold_members[gold_of[m]]
    n = len(shared)
    p, r = (p_sum / n, r_sum / n) if n else (0.0, 0.0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "mentions": n, "gold_only": len(gold_of) - n, "predicted_only": len(pred_of) - n,
            "gold_mentions_in_two_entities": gold_repeated}


def pairwise_links(pred: Sequence[Iterable[Hashable]], gold: Sequence[Iterable[Hashable]]
                   ) -> dict[str, Any]:
    """P/R/F1 of coreference links (unordered mention pairs in one cluster), on the mentions
    both sides contain (as :func:`bcubed`)."""
    pred_of, _ = _cluster_of(pred)
    gold_of, _ = _cluster_of(gold)
    shared = [m for m in gold_of if m in pred_of]

    def links(owner: dict[Hashable, int]) -> set[frozenset]:
        groups: dict[int, list[Hashable]] = {}
        for m in shared:
            groups.setdefault(owner[m], []).append(m)
        return {frozenset(pair) for members in groups.values()
                for pair in combinations(members, 2)}

    pred_links, gold_links = links(pred_of), links(gold_of)
    scores: dict[str, Any] = prf(len(pred_links & gold_links), len(pred_links), len(gold_links))
    scores.update(gold_links=len(gold_links), predicted_links=len(pred_links))
    return scores


def doc_clusters(docs: Sequence[Doc]) -> list[list[tuple[int, int, int]]]:
    """The entities of every Doc as clusters of (doc index, start_char, end_char) keys."""
    return [[(i, *key) for key in keys] for i, doc in enumerate(docs)
            for keys in entity_char_spans(doc)]


def grouping_scores(golds: Sequence[Doc], preds: Sequence[Doc]) -> dict[str, Any]:
    """B-cubed and pairwise-link scores of the predicted entities of ``preds`` against the
    gold entity clusters of ``golds`` (parallel Docs over the same texts)."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold Docs but {len(preds)} predicted Docs")
    pred, gold = doc_clusters(preds), doc_clusters(golds)
    return {"bcubed": bcubed(pred, gold), "pairwise": pairwise_links(pred, gold),
            "gold_entities": len(gold), "predicted_entities": len(pred)}


def grouping_on_gold_mentions(golds: Sequence[Doc], type_map: Mapping[str, str],
                              merge_person_names: bool, type_vote: bool = True
                              ) -> dict[str, Any]:
    """:func:`grouping_scores` of :func:`~spacy_lmrc.entities.group_mentions` (with the given
    settings) run on every gold mention, labelled with its gold entity's type."""
    grouped = []
    for gold in golds:
        spans: dict[tuple[int, int], Span] = {}
        for entity in gold._.entities:
            for m in entity["mentions"]:
                spans.setdefault((m["start"], m["end"]),
                                 Span(gold, m["start"], m["end"], label=entity["type"]))
        doc = gold.copy()
        doc._.entities = group_mentions(doc, spans.values(), type_map, merge_person_names,
                                         type_vote=type_vote)
        grouped.append(doc)
    return grouping_scores(golds, grouped)

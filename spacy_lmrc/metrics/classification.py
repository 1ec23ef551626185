"""How well the RC stage names relations of given pairs (LMRC Table 5's RC-only ablation),
and the trivial references an RC model must beat.

* :func:`top1_accuracy`: over the gold pairs (pairs holding at least one relation), how often
  the pair's best-scored predicted relation is one of its gold relations.
* :func:`multi_relation_scores`: pairs holding several relations: how many the gold has, how
  many the predictions give several, and the recall of the gold facts of such pairs.
* :func:`type_majority_relations`: for each (head type, tail type), the most frequent
  training relation; predicting it for every gold pair is the "entity-type majority"
  reference (it reads no text).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from spacy.tokens import Doc

TypePair = tuple[str, str]


def _gold_labels(doc: Doc) -> dict[tuple[int, int], set[str]]:
    labels: dict[tuple[int, int], set[str]] = {}
    for rel in doc._.relations:
        labels.setdefault((rel["head"], rel["tail"]), set()).add(rel["label"])
    return labels


def top1_accuracy(predicted: Sequence[Doc], gold: Sequence[Doc]) -> dict[str, float]:
    """Fraction of gold pairs whose best-scored predicted relation is correct (0-1)."""
    pairs = correct = 0
    for pred_doc, gold_doc in zip(predicted, gold):
        best: dict[tuple[int, int], tuple[float, str]] = {}
        for rel in pred_doc._.relations:
            key = (rel["head"], rel["tail"])
            if key not in best or rel["score"] > best[key][0]:
                best[key] = (rel["score"], rel["label"])
        for key, labels in _gold_labels(gold_doc).items():
            pairs += 1
            correct += key in best and best[key][1] in labels
    return {"top1": correct / pairs if pairs else 0.0, "gold_pairs": pairs}


def multi_relation_scores(predicted: Sequence[Doc], gold: Sequence[Doc]) -> dict[str, float]:
    """Pairs with more than one relation: gold pairs and their facts, predicted pairs, and the
    recall of those gold facts (13,362 related pairs of Re-DocRED dev hold 17,284 facts)."""
    gold_pairs = gold_facts = found = predicted_pairs = related_pairs = 0
    for pred_doc, gold_doc in zip(predicted, gold):
        predicted_labels = _gold_labels(pred_doc)
        predicted_pairs += sum(len(labels) > 1 for labels in predicted_labels.values())
        related_pairs += len(predicted_labels)
        for key, labels in _gold_labels(gold_doc).items():
            if len(labels) > 1:
                gold_pairs += 1
                gold_facts += len(labels)
                found += len(labels & predicted_labels.get(key, set()))
    return {"gold_pairs": gold_pairs, "gold_facts": gold_facts,
            "predicted_pairs": predicted_pairs, "predicted_related_pairs": related_pairs,
            "recall": found / gold_facts if gold_facts else 0.0}


def type_majority_relations(train_docs: Iterable[Doc]) -> tuple[dict[TypePair, str], str]:
    """The most frequent training relation per (head type, tail type), and overall."""
    by_types: dict[TypePair, Counter] = {}
    overall: Counter = Counter()
    for doc in train_docs:
        entities = doc._.entities
        for rel in doc._.relations:
            types = (entities[rel["head"]]["type"], entities[rel["tail"]]["type"])
            by_types.setdefault(types, Counter())[rel["label"]] += 1
            overall[rel["label"]] += 1
    if not overall:
        raise ValueError("the training documents hold no relations")
    return ({types: counts.most_common(1)[0][0] for types, counts in by_types.items()},
            overall.most_common(1)[0][0])


def reference_predictions(docs: Iterable[Doc], majority: dict[TypePair, str],
                          fallback: str) -> list[dict[str, object]]:
    """Official-format predictions of one relation per gold pair: the pair's type majority
    (``fallback`` for unseen type pairs). Pass ``majority={}`` for always-``fallback``."""
    predictions = []
    for doc in docs:
        entities = doc._.entities
        for head, tail in sorted(_gold_labels(doc)):
            types = (entities[head]["type"], entities[tail]["type"])
            predictions.append({"title": doc._.title, "h_idx": head, "t_idx": tail,
                                "r": majority.get(types, fallback)})
    return predictions

"""Document-level relation extraction metrics, as the official DocRED scorer computes them.

The figures agree with the official ``evaluation.py`` (DocRED, as used by ATLOP, DREEAM and
LMRC) to the last digit, including its quirks:

* predictions are (title, head, tail, relation); duplicates are removed first;
* P = correct / predicted, R = correct / gold facts, F1 their harmonic mean;
* Ign F1: a correct fact whose (head mention name, tail mention name, relation), for any pair of
  mention names of the two entities, also occurs in the training split is removed from the
  correct count and from the predicted count (precision only; recall is not changed), with the
  official ``+ 1e-5`` in the ignored precision's denominator;
* predictions for titles that are not in the gold set count as predicted and never as correct.

Gold titles must be unique (a prediction names its document by title) and gold documents
must carry labels; prediction fields are type-checked (an index is an int, never a float or
a bool) so nothing is truncated or coerced into a match.

Plus the splits LMRC reports: intra / inter-sentence P/R/F1 (a fact is intra when some head
mention and some tail mention share a sentence), per-relation F1, and pair-level P/R/F1 for the
candidate proposer (a pair is positive when it holds any relation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spacy.tokens import Doc

from ..errors import InputError

Fact = tuple[str, int, int, str]  # (title, head, tail, relation)
TrainFacts = set[tuple[str, str, str]]  # (head mention name, tail mention name, relation)


@dataclass
class GoldDocument:
    """What the scorer needs of a gold document."""

    title: str
    mention_names: list[list[str]]
    mention_sents: list[set[int]]
    facts: dict[tuple[int, int, str], list[int]] = field(default_factory=dict)

    def is_intra(self, head: int, tail: int) -> bool:
        if not (0 <= head < len(self.mention_sents) and 0 <= tail < len(self.mention_sents)):
            return False
        return bool(self.mention_sents[head] & self.mention_sents[tail])


def gold_from_doc(doc: Doc) -> GoldDocument:
    """A :class:`GoldDocument` from a reference Doc (``doc._.entities``, ``doc._.relations``)."""
    gold = GoldDocument(
        title=doc._.title,
        mention_names=[[m["name"] for m in ent["mentions"]] for ent in doc._.entities],
        mention_sents=[{m["sent"] for m in ent["mentions"]} for ent in doc._.entities],
    )
    for rel in doc._.relations:
        gold.facts[(rel["head"], rel["tail"], rel["label"])] = list(rel.get("evidence", []))
    return gold


def gold_from_record(record: Mapping[str, Any]) -> GoldDocument:
    """A :class:`GoldDocument` straight from a DocRED JSON record (as the official scorer reads).

    A record without ``labels`` (the hidden-label test split) cannot be gold: it would score
    as a document with no facts.
    """
    if "labels" not in record:
        raise InputError("missing field 'labels': a gold document needs labels",
                         title=record.get("title"), field="labels")
    vertex_set = record["vertexSet"]
    gold = GoldDocument(
        title=record["title"],
        mention_names=[[m["name"] for m in vertex] for vertex in vertex_set],
        mention_sents=[{m["sent_id"] for m in vertex} for vertex in vertex_set],
    )
    for label in record["labels"]:
        gold.facts[(label["h"], label["t"], label["r"])] = list(label.get("evidence", []))
    return gold


def train_facts_from_golds(golds: Iterable[GoldDocument]) -> TrainFacts:
    """Every (head mention name, tail mention name, relation) of a training split."""
    facts: TrainFacts = set()
    for gold in golds:
        for head, tail, rel in gold.facts:
            for n1 in gold.mention_names[head]:
                for n2 in gold.mention_names[tail]:
                    facts.add((n1, n2, rel))
    return facts


def prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 as fractions; 0 where a denominator is 0."""
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f}


def _is_index(value: Any) -> bool:
    """A non-negative int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def prediction_fact(pred: Any) -> tuple[Fact, set[int]]:
    """The (title, head, tail, relation) of one result.json prediction, and its evidence.

    Raises :class:`InputError` (with title and field, no index) when a field is missing or of
    the wrong type: ``title`` and ``r`` strings, ``h_idx`` / ``t_idx`` non-negative ints,
    ``evidence`` (optional) a list of non-negative ints.
    """
    if not isinstance(pred, dict):
        raise InputError(f"expected a prediction object, got {type(pred).__name__}",
                         kind="expected a prediction object")
    title = pred.get("title") if isinstance(pred.get("title"), str) else None
    for key in ("title", "h_idx", "t_idx", "r"):
        if key not in pred:
            raise InputError(f"missing field {key!r}: a prediction needs title, h_idx, t_idx "
                             f"and r", title=title, field=key, kind="missing field")
    checks = (("title", isinstance(pred["title"], str), "a title string"),
              ("h_idx", _is_index(pred["h_idx"]), "an integer entity index >= 0"),
              ("t_idx", _is_index(pred["t_idx"]), "an integer entity index >= 0"),
              ("r", isinstance(pred["r"], str) and pred["r"] != "", "a relation id string"))
    evidence = pred.get("evidence")
    evidence_ok = evidence is None or (
        isinstance(evidence, list) and all(_is_index(s) for s in evidence))
    for key, ok, expected in (*checks, ("evidence", evidence_ok, "a list of sentence indices")):
        if not ok:
            value = pred[key]
            raise InputError(f"expected {expected}, got {type(value).__name__} {value!r}",
                             title=title, field=key, kind=f"expected {expected}")
    return (pred["title"], pred["h_idx"], pred["t_idx"], pred["r"]), set(evidence or [])


def _dedupe(predictions: Iterable[Mapping[str, Any]]) -> dict[Fact, set[int]]:
    """Unique predictions with their evidence (the first duplicate's, as the official scorer)."""
    unique: dict[Fact, set[int]] = {}
    for i, pred in enumerate(predictions):
        try:
            key, evidence = prediction_fact(pred)
        except InputError as err:
            raise InputError(err.reason, index=i, title=err.title, field=err.field,
                             kind=err.kind, unit="prediction") from None
        unique.setdefault(key, evidence)
    return unique


def _check_unique_titles(golds: list[GoldDocument]) -> None:
    """Predictions name documents by title: two gold documents with one title cannot be told
    apart (one would be credited with the other's facts)."""
    seen: dict[str, int] = {}
    for i, gold in enumerate(golds):
        if gold.title in seen:
            raise InputError(f"duplicate gold title, also document {seen[gold.title]}: titles "
                             f"must identify gold documents", index=i, title=gold.title,
                             field="title")
        seen[gold.title] = i


@dataclass
class _Matches:
    """What the predictions got right (the official scorer's counters)."""

    correct: int = 0
    correct_in_train: int = 0
    correct_evidence: int = 0
    predicted_evidence: int = 0
    unknown_titles: int = 0


def score_docred(
    golds: Iterable[GoldDocument],
    predictions: Iterable[Mapping[str, Any]],
    train_facts: TrainFacts | None = None,
) -> dict[str, Any]:
    """Score official-format predictions against gold documents.

    Returns fractions in [0, 1]: precision, recall, f1, ign_f1 (None without ``train_facts``),
    evidence_f1, intra/inter P/R/F1, per-relation P/R/F1, pair-level P/R/F1, and the counts.
    """
    golds = list(golds)
    _check_unique_titles(golds)
    by_title: dict[str, GoldDocument] = {gold.title: gold for gold in golds}
    gold_facts: dict[Fact, list[int]] = {
        (gold.title, h, t, r): evi for gold in golds for (h, t, r), evi in gold.facts.items()
    }
    preds = _dedupe(predictions)
    matches = _match(preds, by_title, gold_facts, train_facts)

    result: dict[str, Any] = prf(matches.correct, len(preds), len(gold_facts))
    result["ign_f1"] = None if train_facts is None else _ign_f1(
        matches.correct, matches.correct_in_train, len(preds), result["recall"])
    total_evidence = sum(len(evi) for evi in gold_facts.values())
    result["evidence_f1"] = prf(matches.correct_evidence, matches.predicted_evidence,
                                total_evidence)["f1"]
    result.update(_intra_inter_scores(set(gold_facts), set(preds), by_title))
    result["per_relation"] = per_relation_scores(set(gold_facts), set(preds))
    result["pairs"] = pair_scores(
        {f[:3] for f in gold_facts}, {f[:3] for f in preds}
    )
    result["counts"] = {
        "documents": len(by_title),
        "gold_facts": len(gold_facts),
        "predicted": len(preds),
        "correct": matches.correct,
        "correct_in_train": matches.correct_in_train if train_facts is not None else None,
        "predictions_for_unknown_titles": matches.unknown_titles,
    }
    return result


def _match(preds: dict[Fact, set[int]], by_title: dict[str, GoldDocument],
           gold_facts: dict[Fact, list[int]], train_facts: TrainFacts | None) -> _Matches:
    """Count correct facts, those also in the training split (any pair of mention names),
    and the evidence sentences predicted and correct."""
    matches = _Matches()
    for (title, h, t, r), evidence in preds.items():
        gold = by_title.get(title)
        if gold is None:
            matches.unknown_titles += 1
            continue
        matches.predicted_evidence += len(evidence)
        if (title, h, t, r) not in gold_facts:
            continue
        matches.correct += 1
        matches.correct_evidence += len(evidence & set(gold_facts[(title, h, t, r)]))
        if train_facts and any(
            (n1, n2, r) in train_facts
            for n1 in gold.mention_names[h]
            for n2 in gold.mention_names[t]
        ):
            matches.correct_in_train += 1
    return matches


def _ign_f1(correct: int, correct_in_train: int, predicted: int, recall: float) -> float:
    """F1 with the facts seen in training removed from precision (the official ``+ 1e-5``)."""
    ign_p = (correct - correct_in_train) / (predicted - correct_in_train + 1e-5)
    return 2 * ign_p * recall / (ign_p + recall) if ign_p + recall > 0 else 0.0


def _intra_inter_scores(gold_facts: set[Fact], preds: set[Fact],
                        by_title: dict[str, GoldDocument]) -> dict[str, float]:
    """``intra_*`` and ``inter_*`` P/R/F1: facts whose entities share a sentence, and not."""
    result = {}
    for group, intra in (("intra", True), ("inter", False)):
        g = {f for f in gold_facts if by_title[f[0]].is_intra(f[1], f[2]) == intra}
        p = {f for f in preds if f[0] in by_title and by_title[f[0]].is_intra(f[1], f[2]) == intra}
        group_scores = prf(len(g & p), len(p), len(g))
        for key, value in group_scores.items():
            result[f"{group}_{key}"] = value
    return result


def per_relation_scores(gold: set[Fact], predicted: set[Fact]) -> dict[str, dict[str, Any]]:
    """P/R/F1 and support for every relation seen in gold or predictions."""
    gold_counts = Counter(f[3] for f in gold)
    pred_counts = Counter(f[3] for f in predicted)
    correct_counts = Counter(f[3] for f in gold & predicted)
    scores = {}
    for rel in sorted(set(gold_counts) | set(pred_counts)):
        scores[rel] = prf(correct_counts[rel], pred_counts[rel], gold_counts[rel])
        scores[rel]["support"] = gold_counts[rel]
    return scores


def pair_scores(
    gold_pairs: set[tuple[str, int, int]], predicted_pairs: set[tuple[str, int, int]],
    candidate_space: int | None = None,
) -> dict[str, Any]:
    """Pair-level P/R/F1: a (title, head, tail) pair is positive when it holds any relation.

    With ``candidate_space`` (the number of ordered entity pairs) it also reports the fraction
    of that space the prediction keeps, the figure that prices a candidate proposer.
    """
    scores: dict[str, Any] = prf(len(gold_pairs & predicted_pairs), len(predicted_pairs),
                                 len(gold_pairs))
    scores["gold_pairs"] = len(gold_pairs)
    scores["predicted_pairs"] = len(predicted_pairs)
    if candidate_space is not None:
        scores["candidate_space"] = candidate_space
        scores["kept_fraction"] = len(predicted_pairs) / candidate_space if candidate_space else 0.0
    return scores


def train_facts_from_docs(docs: Iterable[Doc]) -> TrainFacts:
    """Training facts for Ign F1 from reference Docs."""
    return train_facts_from_golds(gold_from_doc(doc) for doc in docs)

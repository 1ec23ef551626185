"""End-to-end scoring of a pipeline that found its own entities in plain text.

The predicted Docs come from the gold documents' text (their words joined by spaces), so the
pipeline's entities are not the gold ones and the official scorer, which names entities by
their index in the gold document, cannot read the predictions as they are. This module:

1. aligns predicted entities to gold entities one to one by mention overlap
   (:func:`align_entities`): every (predicted, gold) pair is scored by how many of the gold
   entity's mentions some predicted mention overlaps (then by exact mention matches), and pairs
   are taken greedily, best first. A gold entity is then *mapped*, *missed* (no predicted
   mention overlaps any of its mentions) or *merged* (its mentions went into predicted entities
   mapped to other gold entities); it is *split* when several predicted entities overlap it
   (one of them is mapped, the others' relations cannot be right);
2. rewrites the predicted relations with gold entity indices (:func:`translate_relations`; a
   relation with an unmapped entity keeps an index no gold entity has, so it counts as predicted
   and never as correct), ready for :func:`~spacy_lmrc.metrics.docred.score_docred`;
3. names, for every gold relation, the first stage that lost it (:func:`attribute_losses`):
   an entity missed, merged or split, the pair not proposed, the relation wrong; or found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spacy.tokens import Doc

from .docred import prf
from .entities import MentionKey, entity_char_spans

ENTITY_MISSED = "entity missed"
ENTITIES_MERGED = "entities merged"
ENTITY_SPLIT = "entity split"
NOT_PROPOSED = "pair not proposed"
RELATION_WRONG = "relation wrong"
FOUND = "found"
STAGES = (ENTITY_MISSED, ENTITIES_MERGED, ENTITY_SPLIT, NOT_PROPOSED, RELATION_WRONG, FOUND)


def _overlaps(a: MentionKey, b: MentionKey) -> bool:
    """Two character spans share at least one character."""
    return a[0] < b[1] and b[0] < a[1]


@dataclass
class EntityAlignment:
    """A one-to-one map between the predicted and the gold entities of one document."""

    n_gold: int
    n_pred: int
    gold_of: dict[int, int] = field(default_factory=dict)  # predicted -> gold
    pred_of: dict[int, int] = field(default_factory=dict)  # gold -> predicted
    # per gold entity: the predicted entities with a mention overlapping one of its mentions
    overlapping: list[set[int]] = field(default_factory=list)

    def status(self, gold: int) -> str:
        """``mapped``, ``missed`` or ``merged`` (see the module docstring)."""
        if gold in self.pred_of:
            return "mapped"
        return "merged" if self.overlapping[gold] else "missed"

    def counts(self) -> Counter:
        """How many gold entities are mapped, missed, merged and split; how many predicted
        entities are mapped and unmapped."""
        counts: Counter = Counter(f"gold {self.status(g)}" for g in range(self.n_gold))
        counts["gold split"] = sum(len(over) > 1 for over in self.overlapping)
        counts["predicted mapped"] = len(self.gold_of)
        counts["predicted unmapped"] = self.n_pred - len(self.gold_of)
        return counts


def align_entities(gold: Doc, pred: Doc) -> EntityAlignment:
    """Map predicted to gold entities one to one by mention overlap (character offsets, so
    the two Docs may tokenize the same text differently)."""
    gold_spans, pred_spans = entity_char_spans(gold), entity_char_spans(pred)
    alignment = EntityAlignment(len(gold_spans), len(pred_spans),
                                overlapping=[set() for _ in gold_spans])
    scored = []
    for g, g_keys in enumerate(gold_spans):
        for p, p_keys in enumerate(pred_spans):
            covered = sum(any(_overlaps(gk, pk) for pk in p_keys) for gk in g_keys)
            if covered:
                exact = len(set(g_keys) & set(p_keys))
                scored.append((-covered, -exact, p, g))
                alignment.overlapping[g].add(p)
    for _, _, p, g in sorted(scored):
        if p not in alignment.gold_of and g not in alignment.pred_of:
            alignment.gold_of[p] = g
            alignment.pred_of[g] = p
    return alignment


def translate_relations(pred: Doc, alignment: EntityAlignment, title: str) -> list[dict[str, Any]]:
    """``pred``'s relations as result.json records with gold entity indices; an unmapped
    predicted entity ``p`` becomes ``n_gold + p`` (an index no gold entity has)."""

    def index(p: int) -> int:
        return alignment.gold_of.get(p, alignment.n_gold + p)

    return [{"title": title, "h_idx": index(r["head"]), "t_idx": index(r["tail"]),
             "r": r["label"], "evidence": list(r.get("evidence", []))}
            for r in pred._.relations]


def attribute_losses(gold: Doc, pred: Doc, alignment: EntityAlignment,
                     proposer_ran: bool) -> Counter:
    """For every gold relation, the first stage that lost it (or ``found``), counted.

    ``proposer_ran``: the pipeline has a candidate proposer, so an unproposed pair is its loss
    (without one the classifier sees every pair).
    """
    predicted = {(r["head"], r["tail"], r["label"]) for r in pred._.relations}
    proposed = {(c["head"], c["tail"]) for c in pred._.relation_candidates}
    losses: Counter = Counter()
    for rel in gold._.relations:
        h, t, label = rel["head"], rel["tail"], rel["label"]
        statuses = (alignment.status(h), alignment.status(t))
        if "missed" in statuses:
            losses[ENTITY_MISSED] += 1
        elif "merged" in statuses:
            losses[ENTITIES_MERGED] += 1
        elif (alignment.pred_of[h], alignment.pred_of[t], label) in predicted:
            losses[FOUND] += 1
        elif any((a, b, label) in predicted for a in alignment.overlapping[h]
                 for b in alignment.overlapping[t]):
            losses[ENTITY_SPLIT] += 1
        elif proposer_ran and (alignment.pred_of[h], alignment.pred_of[t]) not in proposed:
            losses[NOT_PROPOSED] += 1
        else:
            losses[RELATION_WRONG] += 1
    return losses


def text_relation_scores(golds: Sequence[Doc], preds: Sequence[Doc], proposer_ran: bool
                         ) -> tuple[list[dict[str, Any]], Counter, Counter]:
    """Over parallel gold and predicted Docs: the translated predictions (result.json records
    in gold indices, titled by the gold titles), the stage losses of the gold relations and
    the entity alignment counts."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold Docs but {len(preds)} predicted Docs")
    records: list[dict[str, Any]] = []
    losses: Counter = Counter()
    entity_counts: Counter = Counter()
    for gold, pred in zip(golds, preds):
        alignment = align_entities(gold, pred)
        records += translate_relations(pred, alignment, gold._.title)
        losses.update(attribute_losses(gold, pred, alignment, proposer_ran))
        entity_counts.update(alignment.counts())
    return records, losses, entity_counts


def loss_table(losses: Counter) -> dict[str, dict[str, Any]]:
    """Every stage with its count and share of the gold relations, in pipeline order."""
    total = sum(losses.values())
    return {stage: {"count": losses[stage], "fraction": losses[stage] / total if total else 0.0}
            for stage in STAGES}


def entity_mapping_scores(entity_counts: Counter) -> dict[str, Any]:
    """Entity-level P/R/F1 of the alignment (a mapped predicted entity is a hit) and the
    counts behind it."""
    mapped = entity_counts["predicted mapped"]
    gold = sum(entity_counts[f"gold {s}"] for s in ("mapped", "missed", "merged"))
    predicted = mapped + entity_counts["predicted unmapped"]
    return {**prf(mapped, predicted, gold), "counts": dict(sorted(entity_counts.items()))}

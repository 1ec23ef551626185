"""LMRC answers to relations: each relation name the LLM answered for a pair, scored.

A name decoded under constraint carries the LLM's probability: its score fuses the proposer's
P(pair related), the LLM's P(relation) and P(None) (:mod:`spacy_lmrc.fusion`), and it is kept
when the fused score reaches the fusion's threshold; the three inputs stay on the relation
(``"scores"``), so a fusion can be tuned on the output. A name read from a text answer carries
none: it scores the proposer's P(pair) when the pair came from ``doc._.relation_candidates``,
else 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping

from spacy.tokens import Doc

from ...doc import Relation
from ...fusion import RelationScores, ScoreFusion
from ...llm.parsing import ParseStats
from ...llm.requests import Answer

#: the answer for a pair without relation (the baseline's, and the RC's with ``allow_none``)
NONE_NAME = "None"


def relations_from_answers(doc: Doc, pairs: list[tuple[int, int]], answers: list[Answer],
                           stats: ParseStats, *, labels: Mapping[str, str], allow_none: bool,
                           fusion: ScoreFusion) -> list[Relation]:
    """The relations of ``doc`` from the answers to ``pairs`` (names of ``labels``, ``None``
    aside); counts ``pairs``, ``unanswered``, ``none``, ``several_relations``,
    ``below_threshold`` and ``relations`` in ``stats``."""
    by_name = {name: label for label, name in labels.items()}
    pair_scores = {(c["head"], c["tail"]): float(c["score"]) for c in doc._.relation_candidates}
    relations: list[Relation] = []
    for (head, tail), answer in zip(pairs, answers):
        stats.add("pairs")
        if not answer:
            stats.add("unanswered")
        probabilities = dict(answer)
        none = probabilities.pop(NONE_NAME, 0.0) if allow_none else 0.0
        if none and none == max([none, *probabilities.values()]):
            stats.add("none")
        if len(probabilities) > 1:
            stats.add("several_relations")
        for name, probability in probabilities.items():
            if probability is None:
                stats.add("relations")
                relations.append({"head": head, "tail": tail, "label": by_name[name],
                                  "score": pair_scores.get((head, tail), 1.0)})
                continue
            scores = RelationScores(pair=pair_scores.get((head, tail)), relation=probability,
                                    none=none)
            score = fusion.score(scores)
            if not fusion.keeps(score):
                stats.add("below_threshold")
                continue
            stats.add("relations")
            relations.append({"head": head, "tail": tail, "label": by_name[name],
                              "score": round(score, 6),
                              "scores": {k: None if v is None else round(v, 6)
                                         for k, v in scores.to_dict().items()}})
    return relations

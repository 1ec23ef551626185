"""Sentence answers to relations: one label per pair, its LLM probability as the score."""

from __future__ import annotations

from collections.abc import Mapping

from ...doc import Relation
from ...llm.parsing import ParseStats
from ...llm.requests import Answer


def relations_from_answers(pairs: list[tuple[int, int]], answers: list[Answer],
                           stats: ParseStats, *, labels: Mapping[str, str], negative_label: str,
                           threshold: float) -> list[Relation]:
    """A positive label (its display name in ``labels``) with its probability (or the text
    parser's confidence) as the score; the negative label, and positive labels below
    ``threshold``, give none. Counts ``pairs``, ``unanswered``, ``negative``,
    ``below_threshold`` and ``relations`` in ``stats``."""
    by_display = {display: label for label, display in labels.items()}
    relations: list[Relation] = []
    for (head, tail), answer in zip(pairs, answers):
        stats.add("pairs")
        if not answer:
            stats.add("unanswered")
            continue
        name, probability = answer[0]
        label = by_display[name]
        if label == negative_label:
            stats.add("negative")
        elif probability < threshold:
            stats.add("below_threshold")
        else:
            stats.add("relations")
            relations.append({"head": head, "tail": tail, "label": label,
                              "score": round(probability, 6)})
    return relations

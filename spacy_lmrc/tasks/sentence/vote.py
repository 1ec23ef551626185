"""The retrieved examples' labels as a vote, fused with the LLM's answer (RAG4RE's relation
hint, taken at inference).

A retriever trained for relations finds training sentences of the query's relation more often
than not, and it errs on other sentences than the fine-tuned generator does. The fused answer
ranks each label by

    log P_LLM(label) + weight * log P_vote(label)

where ``P_LLM`` is the generator's probability of the label as the pair's answer (a label it
gives less than the decoding floor counts as the floor, an upper bound of what it gives) and
``P_vote`` is the examples' share of the label, add-one smoothed over the label set:
``(n_label + 1) / (k + len(labels))``. ``weight`` 0 keeps the LLM's answer; the scores are
renormalised over the label set, so a relation's score stays a probability.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from ...llm.requests import Answer


def vote_distribution(example_labels: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Each of ``labels``' add-one smoothed share of ``example_labels`` (the retrieved
    examples' labels, as display names); labels outside ``labels`` are not counted."""
    if not labels:
        raise ValueError("the vote needs a label set")
    known = set(labels)
    counts = Counter(label for label in example_labels if label in known)
    total = sum(counts.values()) + len(labels)
    return {label: (counts[label] + 1) / total for label in labels}


def fuse_answer(answer: Answer, vote: Mapping[str, float], *, weight: float,
                floor: float) -> Answer:
    """``answer`` (the LLM's names with their probabilities, those of at least ``floor``)
    reranked with ``vote`` (:func:`vote_distribution`) at ``weight``: every label of the vote,
    best first, with its fused probability."""
    if weight < 0:
        raise ValueError(f"the vote's weight must be at least 0, not {weight}")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"the decoding floor must be in (0, 1], not {floor}")
    given = dict(answer)
    unknown = set(given) - set(vote)
    if unknown:
        raise ValueError(f"the answer names labels outside the vote's label set: "
                         f"{sorted(unknown)}")
    log_scores = {label: math.log(max(given.get(label, floor), floor))
                  + weight * math.log(share) for label, share in vote.items()}
    top = max(log_scores.values())
    total = sum(math.exp(score - top) for score in log_scores.values())
    fused = [(label, math.exp(score - top) / total) for label, score in log_scores.items()]
    return sorted(fused, key=lambda item: -item[1])

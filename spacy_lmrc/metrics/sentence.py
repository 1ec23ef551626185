"""Sentence-level relation classification metrics.

* micro P/R/F1 over every label except the negative one (``Other``, ``no_relation``): a
  prediction of the negative label is no prediction, and gold negatives are no facts;
* SemEval-2010 Task 8's official score: the macro-averaged F1 of the (9+1)-way evaluation with
  directionality taken into account, computed as ``semeval2010_task8_scorer-v1.2.pl`` does
  (per relation type: correct = exact label incl. direction, predicted = every prediction of
  that type in either direction, gold = every gold instance of the type; the macro average runs
  over the types present in the gold labels, ``Other`` excluded).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .docred import prf

_DIRECTION = re.compile(r"\(e[12],e[12]\)$")


def micro_prf(gold: Sequence[str], predicted: Sequence[str], negative_label: str) -> dict[str, Any]:
    """Micro P/R/F1 over the positive labels, plus per-label scores and counts."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    correct = sum(1 for g, p in zip(gold, predicted) if g == p and g != negative_label)
    n_pred = sum(1 for p in predicted if p != negative_label)
    n_gold = sum(1 for g in gold if g != negative_label)
    result: dict[str, Any] = prf(correct, n_pred, n_gold)
    gold_counts = Counter(g for g in gold if g != negative_label)
    pred_counts = Counter(p for p in predicted if p != negative_label)
    correct_counts = Counter(g for g, p in zip(gold, predicted) if g == p and g != negative_label)
    result["per_label"] = {
        label: {**prf(correct_counts[label], pred_counts[label], gold_counts[label]),
                "support": gold_counts[label]}
        for label in sorted(set(gold_counts) | set(pred_counts))
    }
    result["counts"] = {"examples": len(gold), "gold_positive": n_gold,
                        "predicted_positive": n_pred, "correct": correct}
    return result


def semeval_macro_f1(gold: Sequence[str], predicted: Sequence[str],
                     negative_label: str = "Other") -> float:
    """SemEval-2010 Task 8 official macro-F1 (9 types, direction counted), as a fraction."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    gold_types = Counter(_DIRECTION.sub("", g) for g in gold)
    pred_types = Counter(_DIRECTION.sub("", p) for p in predicted)
    correct = Counter(_DIRECTION.sub("", g) for g, p in zip(gold, predicted) if g == p)
    types = [t for t in gold_types if t != negative_label]
    if not types:
        return 0.0
    total = 0.0
    for rel_type in types:
        total += prf(correct[rel_type], pred_types[rel_type], gold_types[rel_type])["f1"]
    return total / len(types)


def score_labels(gold: Sequence[str], predicted: Sequence[str], negative_label: str,
                 semeval: bool = False) -> dict[str, Any]:
    """Micro P/R/F1 without the negative label, and SemEval's macro-F1 when asked."""
    result = micro_prf(gold, predicted, negative_label)
    if semeval:
        result["semeval_macro_f1"] = semeval_macro_f1(gold, predicted, negative_label)
    return result

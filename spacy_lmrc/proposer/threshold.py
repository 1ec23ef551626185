"""Choosing the proposer's threshold on dev, and pair-level metrics over probabilities.

A pair is kept when P(relation) > threshold. Policies are registered functions, so a config
names the one it wants::

    [threshold]
    @misc = "spacy_lmrc.threshold.best_f1.v1"          # maximise pair-level F1
    # @misc = "spacy_lmrc.threshold.target_recall.v1"  # smallest kept set with recall >= target
    # target_recall = 0.9
    # @misc = "spacy_lmrc.threshold.recall_within_budget.v1"  # the same, kept set capped
    # target_recall = 0.9
    # max_kept_fraction = 0.15

Every dropped relation pair is lost for the LLM stage, so the recall policies trade kept
fraction (LLM time, precision) for recall explicitly; ``recall_within_budget`` is the LMRC
pipeline's: it reaches the target recall when the model allows it within the budget, and
otherwise keeps the budget (the most recall that many pairs buy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from spacy.util import registry

ThresholdPolicy = Callable[[np.ndarray, np.ndarray], float]


def pair_prf(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Pair-level precision, recall, F1 and kept fraction at ``threshold``, as fractions (0-1).

    Fractions like every other scorer here; printing code multiplies by 100.
    """
    kept = probs > threshold
    tp = float(np.sum(kept & (labels > 0)))
    n_kept, n_gold = float(kept.sum()), float((labels > 0).sum())
    p = tp / n_kept if n_kept else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"threshold": float(threshold), "precision": p, "recall": r, "f1": f,
            "kept": int(n_kept), "kept_fraction": n_kept / max(len(probs), 1)}


def _cut_thresholds(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descending probabilities and, per cut after rank k, a threshold keeping exactly k + 1."""
    order = np.argsort(-probs, kind="stable")
    sorted_p = probs[order]
    below = np.append(sorted_p[1:], 0.0)
    return order, (sorted_p + below) / 2


def best_f1_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The threshold of highest pair-level F1 (midway between two neighbouring scores)."""
    if len(probs) == 0 or labels.sum() == 0:
        return 0.5
    order, cuts = _cut_thresholds(probs)
    tp = np.cumsum(labels[order] > 0)
    kept = np.arange(1, len(probs) + 1)
    f1 = 2 * tp / (kept + (labels > 0).sum())
    # only cuts between distinct scores can be realised by a threshold
    distinct = np.append(probs[order][1:] < probs[order][:-1], True)
    f1 = np.where(distinct, f1, -1.0)
    return float(cuts[int(np.argmax(f1))])


def target_recall_threshold(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The highest threshold (smallest kept set) whose pair recall reaches ``target`` (0-1)."""
    if not 0 < target <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target}")
    n_gold = (labels > 0).sum()
    if len(probs) == 0 or n_gold == 0:
        return 0.5
    order, cuts = _cut_thresholds(probs)
    recall = np.cumsum(labels[order] > 0) / n_gold
    distinct = np.append(probs[order][1:] < probs[order][:-1], True)
    ok = np.nonzero((recall >= target - 1e-12) & distinct)[0]
    return float(cuts[ok[0]]) if len(ok) else 0.0


def kept_fraction_threshold(probs: np.ndarray, fraction: float) -> float:
    """The lowest threshold that keeps at most ``fraction`` (0-1) of the pairs."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"a kept fraction must be in [0, 1], got {fraction}")
    n_keep = int(np.floor(fraction * len(probs) + 1e-9))
    if len(probs) == 0 or n_keep >= len(probs):
        return 0.0
    ordered = np.sort(probs)[::-1]
    # keep the n_keep best; ties at the cut are dropped together (never more than the budget)
    return float(ordered[n_keep]) if n_keep else float(ordered[0])


def recall_vs_kept(probs: np.ndarray, labels: np.ndarray,
                   thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Pair metrics at several thresholds: how much recall each kept fraction buys."""
    return [pair_prf(probs, labels, t) for t in thresholds]


@registry.misc("spacy_lmrc.threshold.best_f1.v1")
def make_best_f1_policy() -> ThresholdPolicy:
    """Threshold policy: maximise dev pair-level F1."""
    return best_f1_threshold


@registry.misc("spacy_lmrc.threshold.target_recall.v1")
def make_target_recall_policy(target_recall: float = 0.9) -> ThresholdPolicy:
    """Threshold policy: the smallest kept set whose dev pair recall is at least the target."""
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")

    def policy(probs: np.ndarray, labels: np.ndarray) -> float:
        return target_recall_threshold(probs, labels, target_recall)

    return policy


@registry.misc("spacy_lmrc.threshold.recall_within_budget.v1")
def make_recall_within_budget_policy(target_recall: float = 0.9,
                                     max_kept_fraction: float = 0.15) -> ThresholdPolicy:
    """Threshold policy: the smallest kept set whose dev pair recall reaches the target, but
    never more than ``max_kept_fraction`` of the pairs (the LLM stage's budget)."""
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if not 0 < max_kept_fraction <= 1:
        raise ValueError(f"max_kept_fraction must be in (0, 1], got {max_kept_fraction}")

    def policy(probs: np.ndarray, labels: np.ndarray) -> float:
        return max(target_recall_threshold(probs, labels, target_recall),
                   kept_fraction_threshold(probs, max_kept_fraction))

    return policy

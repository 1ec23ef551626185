"""One score per predicted relation, fused from the proposer's and the LLM's probabilities.

LMRC's two stages each know something the other does not: the proposer's P(pair related) is
calibrated over every pair of a document, the LLM's probability of a relation (and of
``None``) reads the pair in its context. A relation item carries the three
(``relation["scores"]``: ``pair``, ``relation``, ``none``) and its ``score`` is their fusion:

* ``spacy_lmrc.fusion.llm.v1``: the LLM's probability of the relation alone;
* ``spacy_lmrc.fusion.product.v1``: P(pair related) x P(relation);
* ``spacy_lmrc.fusion.logistic.v1``: a logistic regression over logit P(pair), log P(relation)
  and log(1 - P(None)), fitted on dev (as DREll, NAACL 2025, fuses a small model and an LLM).

Each keeps the relations whose fused score reaches its ``threshold``. :func:`tune_fusion`
chooses the combination and its threshold by F1 on dev; the task stores the result with the
pipeline, as the proposer stores its threshold.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spacy.util import registry

#: probabilities are clipped to [EPS, 1 - EPS] before logs and logits
EPS = 1e-4


@dataclass(frozen=True)
class RelationScores:
    """What the two stages say about one (pair, relation).

    pair: the proposer's P(pair holds any relation); None when no proposer scored the pair.
    relation: the LLM's probability of the relation as the pair's answer.
    none: the LLM's probability of ``None`` for the pair (0 where it was not probable enough
        to be decoded, or the task has no ``None``).
    """

    pair: float | None
    relation: float
    none: float = 0.0

    def to_dict(self) -> dict[str, float | None]:
        return {"pair": self.pair, "relation": self.relation, "none": self.none}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelationScores:
        return cls(pair=data.get("pair"), relation=float(data["relation"]),
                   none=float(data.get("none") or 0.0))

    def features(self) -> list[float]:
        """logit P(pair) (0 without a proposer), log P(relation), log(1 - P(None))."""
        pair = 0.0 if self.pair is None else _logit(self.pair)
        return [pair, math.log(_clip(self.relation)), math.log(_clip(1.0 - self.none))]


def _clip(p: float) -> float:
    return min(max(p, EPS), 1.0 - EPS)


def _logit(p: float) -> float:
    p = _clip(p)
    return math.log(p / (1.0 - p))


class ScoreFusion(ABC):
    """A relation's fused score from :class:`RelationScores`, and the least score kept."""

    kind: str

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    @abstractmethod
    def score(self, scores: RelationScores) -> float:
        """The fused score in [0, 1]."""

    def keeps(self, score: float) -> bool:
        return score >= self.threshold

    def config(self) -> dict[str, Any]:
        """The registered name and arguments that rebuild this fusion (stored with pipelines)."""
        return {"@misc": f"spacy_lmrc.fusion.{self.kind}.v1", "threshold": self.threshold}


class LLMScore(ScoreFusion):
    """The LLM's probability of the relation (the proposer's score is not used)."""

    kind = "llm"

    def score(self, scores: RelationScores) -> float:
        return scores.relation


class ProductScore(ScoreFusion):
    """P(pair related) x P(relation): both stages must agree (no proposer: P(relation))."""

    kind = "product"

    def score(self, scores: RelationScores) -> float:
        return scores.relation * (1.0 if scores.pair is None else scores.pair)


class LogisticScore(ScoreFusion):
    """sigmoid(bias + weights . features), features as :meth:`RelationScores.features`."""

    kind = "logistic"

    def __init__(self, weights: Sequence[float], bias: float, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        if len(weights) != 3:
            raise ValueError(f"the logistic fusion takes 3 weights (pair, relation, none), "
                             f"not {len(weights)}")
        self.weights = [float(w) for w in weights]
        self.bias = float(bias)

    def score(self, scores: RelationScores) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, scores.features()))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "weights": self.weights, "bias": self.bias}


@registry.misc("spacy_lmrc.fusion.llm.v1")
def make_llm_score(threshold: float = 0.0) -> ScoreFusion:
    """Score = the LLM's probability of the relation; keep it from ``threshold`` on."""
    return LLMScore(threshold)


@registry.misc("spacy_lmrc.fusion.product.v1")
def make_product_score(threshold: float = 0.0) -> ScoreFusion:
    """Score = P(pair related) x P(relation); keep it from ``threshold`` on."""
    return ProductScore(threshold)


@registry.misc("spacy_lmrc.fusion.logistic.v1")
def make_logistic_score(weights: list[float], bias: float, threshold: float = 0.5
                        ) -> ScoreFusion:
    """Score = a fitted logistic regression (see :func:`tune_fusion`); keep it from
    ``threshold`` on."""
    return LogisticScore(weights, bias, threshold)


def fusion_from_config(config: dict[str, Any]) -> ScoreFusion:
    """The fusion a :meth:`ScoreFusion.config` dict describes."""
    return registry.resolve({"fusion": config})["fusion"]


# tuning on dev ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredRelation:
    """One predicted relation of a dev document: its stage scores and whether it is gold."""

    doc: int
    scores: RelationScores
    correct: bool


def best_threshold(scores: Sequence[float], correct: Sequence[bool], gold: int
                   ) -> tuple[float, dict[str, float]]:
    """The threshold that maximises F1 when the relations scoring at least it are kept, and
    P/R/F1 there; ``gold`` counts every gold fact (also those never predicted). Where no
    relation is right, the threshold keeps none."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    best = (0.0, math.inf, 0, 0)  # f1, threshold, kept, true positives
    tp = 0
    for kept, i in enumerate(order, start=1):
        tp += bool(correct[i])
        tied_below = kept < len(order) and scores[order[kept]] == scores[i]
        if tied_below:
            continue
        f1 = 2 * tp / (kept + gold) if kept + gold else 0.0
        if f1 > best[0]:
            best = (f1, scores[i], kept, tp)
    f1, threshold, kept, tp = best
    if not kept:  # nothing right to keep: a threshold just above every score keeps nothing
        threshold = math.nextafter(max(scores, default=1.0), math.inf)
    return threshold, {"p": tp / kept if kept else 0.0, "r": tp / gold if gold else 0.0,
                       "f1": f1, "kept": kept}


def fit_logistic(items: Sequence[ScoredRelation], l2: float = 1e-2,
                 iterations: int = 50) -> LogisticScore:
    """A logistic regression of ``correct`` on the stage scores' features (Newton steps with
    a little L2 on the weights, not the bias)."""
    import numpy as np

    x = np.array([[1.0, *item.scores.features()] for item in items])
    y = np.array([float(item.correct) for item in items])
    w = np.zeros(x.shape[1])
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x.T * (p * (1 - p))) @ x + penalty + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return LogisticScore(weights=w[1:].tolist(), bias=float(w[0]))


FUSION_KINDS = ("llm", "product", "logistic")


def fit_fusion(kind: str, items: Sequence[ScoredRelation], gold: int
               ) -> tuple[ScoreFusion, dict[str, float]]:
    """Fit ``kind`` on ``items`` and set its F1-best threshold; P/R/F1 at that threshold."""
    if kind not in FUSION_KINDS:
        raise ValueError(f"unknown fusion {kind!r} (expected one of {', '.join(FUSION_KINDS)})")
    fusion: ScoreFusion = {"llm": LLMScore, "product": ProductScore}[kind]() \
        if kind != "logistic" else fit_logistic(items)
    scores = [fusion.score(item.scores) for item in items]
    fusion.threshold, metrics = best_threshold(scores, [item.correct for item in items], gold)
    return fusion, metrics


def cross_fitted_f1(kind: str, items: Sequence[ScoredRelation],
                    gold_per_doc: dict[int, int], folds: int = 2) -> float | None:
    """F1 of ``kind`` fitted (weights and threshold) on all folds but one and applied to the
    held-out one, pooled over folds (documents are assigned to folds by index): the fused
    score's dev figure without the optimism of choosing on the same documents. None when a
    fold would be fitted on no relation (fewer documents with predictions than folds)."""
    tp = kept = 0
    for fold in range(folds):
        train = [item for item in items if item.doc % folds != fold]
        test = [item for item in items if item.doc % folds == fold]
        if not train:
            return None
        train_gold = sum(n for doc, n in gold_per_doc.items() if doc % folds != fold)
        fusion, _ = fit_fusion(kind, train, train_gold)
        for item in test:
            if fusion.keeps(fusion.score(item.scores)):
                kept += 1
                tp += item.correct
    gold = sum(gold_per_doc.values())
    return 2 * tp / (kept + gold) if kept + gold else 0.0


def tune_fusion(items: Sequence[ScoredRelation], gold_per_doc: dict[int, int],
                kinds: Sequence[str] = FUSION_KINDS
                ) -> tuple[ScoreFusion, list[dict[str, Any]]]:
    """Each fusion of ``kinds`` fitted on every dev relation, with its F1-best threshold; the
    one with the best cross-fitted F1 (its dev F1 where too few documents allow cross-fitting)
    is returned with one report row per kind."""
    gold = sum(gold_per_doc.values())
    rows, fitted = [], {}
    for kind in kinds:
        fusion, metrics = fit_fusion(kind, items, gold)
        fitted[kind] = fusion
        rows.append({"fusion": kind, "config": fusion.config(), **metrics,
                     "cross_fitted_f1": cross_fitted_f1(kind, items, gold_per_doc)})
    best = max(rows, key=lambda row: (row["f1"] if row["cross_fitted_f1"] is None
                                      else row["cross_fitted_f1"], row["f1"]))
    return fitted[best["fusion"]], rows

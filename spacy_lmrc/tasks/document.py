"""The registered LMRC tasks: relation classification (RC) and the LLM-only baseline.

The task itself is :class:`~spacy_lmrc.tasks.lmrc.LMRCTask`; this module holds the factories
configs name. ``spacy_lmrc.LMRCTask.v4`` (an RC that may answer ``None``, trained on the
proposer's candidates without relation, with a fused score) and
``spacy_lmrc.LMRCBaselineTask.v3`` are current; the older versions stay registered with their
argument names (``pairs`` for ``pair_source``) and defaults, and delegate to the newer ones.
None of them needs a relation set up front: without ``labels`` or ``labels_path`` the
``llm_relation_classifier`` gets it in ``initialize`` (from its ``labels`` or the examples).
How text-only models are prompted (template, pairs per prompt, few-shot examples, the parser's
cutoffs) is the text format's business (``spacy_lmrc.TextFormat.v1``, on the backend).
"""

from __future__ import annotations

from spacy.util import registry

from ..fusion import LLMScore, ScoreFusion
from ..llm.formats import CompactFormat, PaperFormat, PromptFormat
from .lmrc import NONE_NAME, PAIR_SOURCES, LMRCTask

__all__ = ["NONE_NAME", "PAIR_SOURCES", "LMRCTask", "make_lmrc_baseline_task",
           "make_lmrc_baseline_task_v2", "make_lmrc_baseline_task_v3", "make_lmrc_task",
           "make_lmrc_task_v2", "make_lmrc_task_v3", "make_lmrc_task_v4"]


@registry.misc("spacy_lmrc.LMRCTask.v4")
def make_lmrc_task_v4(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    pair_source: str = "candidates",
    allow_none: bool = True,
    fusion: ScoreFusion | None = None,
    min_probability: float | None = 0.1,
    train_negatives: float | None = 1.0,
    negative_source: str = "candidates",
    hint_top_m: int | None = None,
) -> LMRCTask:
    """LMRC's RC task on the pairs of ``pair_source`` (see ``.v3``), able to reject a
    candidate: with ``allow_none`` the answer may be ``None``, and fine-tuning adds
    ``train_negatives`` pairs without relation per related pair, drawn from
    ``negative_source`` (``candidates``: the proposer's highest-scored candidates without
    relation, the pairs RC meets at inference; ``random``: a sample of all such pairs).

    The backend returns every relation with LLM probability of at least ``min_probability``
    (None: the greedy answer only), and ``fusion`` (:mod:`spacy_lmrc.fusion`; default the
    LLM's probability, kept from 0) turns the proposer's P(pair), the LLM's P(relation) and
    P(None) into the relation's score and keeps those reaching its threshold:
    ``spacy-lmrc tune-fusion`` chooses both on dev.
    """
    return LMRCTask(labels=labels, labels_path=labels_path, pair_source=pair_source,
                    allow_none=allow_none, prompt_format=prompt_format or CompactFormat(),
                    fusion=fusion, min_probability=min_probability,
                    train_negatives=train_negatives, negative_source=negative_source,
                    hint_top_m=hint_top_m)


@registry.misc("spacy_lmrc.LMRCTask.v3")
def make_lmrc_task_v3(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    pair_source: str = "auto",
    threshold: float = 0.0,
    hint_top_m: int | None = None,
) -> LMRCTask:
    """LMRC's RC task (no ``None`` answers) on the pairs of ``pair_source``: ``candidates``
    (the proposer's), ``all`` or ``auto`` (candidates, else every pair).

    Local models get requests in ``prompt_format`` (default: compact) and ``threshold`` drops
    relations the LLM gives less probability. ``hint_top_m``: narrow each candidate's answer
    space to the proposer's best relation-type hints (None: the whole set).
    """
    return make_lmrc_task_v4(labels_path=labels_path, labels=labels,
                             prompt_format=prompt_format, pair_source=pair_source,
                             allow_none=False, fusion=LLMScore(threshold), min_probability=None,
                             train_negatives=None, negative_source="random",
                             hint_top_m=hint_top_m)


@registry.misc("spacy_lmrc.LMRCBaselineTask.v3")
def make_lmrc_baseline_task_v3(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    threshold: float = 0.0,
    train_negatives: float | None = None,
) -> LMRCTask:
    """The LLM-only baseline (LMRC section 3.2): every ordered pair, ``None`` allowed;
    ``train_negatives`` samples its training pairs without relation. Other arguments as
    ``spacy_lmrc.LMRCTask.v3``."""
    return LMRCTask(labels=labels, labels_path=labels_path, pair_source="all", allow_none=True,
                    prompt_format=prompt_format or CompactFormat(), fusion=LLMScore(threshold),
                    train_negatives=train_negatives)


@registry.misc("spacy_lmrc.LMRCTask.v2")
def make_lmrc_task_v2(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    pairs: str = "auto",
    threshold: float = 0.0,
) -> LMRCTask:
    """``.v3`` with ``pairs`` for ``pair_source``."""
    return make_lmrc_task_v3(labels_path=labels_path, labels=labels,
                             prompt_format=prompt_format, pair_source=pairs, threshold=threshold)


@registry.misc("spacy_lmrc.LMRCBaselineTask.v2")
def make_lmrc_baseline_task_v2(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    threshold: float = 0.0,
    train_negatives: float | None = None,
) -> LMRCTask:
    """``.v3`` under its earlier name."""
    return make_lmrc_baseline_task_v3(labels_path=labels_path, labels=labels,
                                      prompt_format=prompt_format, threshold=threshold,
                                      train_negatives=train_negatives)


@registry.misc("spacy_lmrc.LMRCTask.v1")
def make_lmrc_task(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    pairs: str = "auto",
) -> LMRCTask:
    """``.v3`` in LMRC appendix A's prompt format and without a threshold, with ``pairs`` for
    ``pair_source``."""
    return make_lmrc_task_v3(labels_path=labels_path, labels=labels,
                             prompt_format=PaperFormat(), pair_source=pairs)


@registry.misc("spacy_lmrc.LMRCBaselineTask.v1")
def make_lmrc_baseline_task(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
) -> LMRCTask:
    """``.v3`` in LMRC appendix A's prompt format, without a threshold and with every pair
    without relation as a training pair."""
    return make_lmrc_baseline_task_v3(labels_path=labels_path, labels=labels,
                                      prompt_format=PaperFormat())

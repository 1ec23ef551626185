"""The registered LMRC tasks: ``spacy_lmrc.LMRCTask.v1`` (relation classification) and
``spacy_lmrc.LMRCBaselineTask.v2`` (the LLM-only baseline; ``.v1``, greedy answers with a
threshold on the LLM's probability, stays registered for configs that name it).

Neither needs a relation set up front: without ``labels`` or ``labels_path`` the
``llm_relation_classifier`` gets it in ``initialize`` (from its ``labels`` or the examples), or
from the classifier folder it runs. How text-only models are prompted (template, pairs per
prompt, few-shot examples, the parser's cutoffs) is the text format's business
(``spacy_lmrc.TextFormat.v1``, on the backend).
"""

from __future__ import annotations

from spacy.util import registry

from ...fusion import LLMScore, ScoreFusion
from ...llm.formats import CompactFormat, PromptFormat
from .task import LMRCTask


@registry.misc("spacy_lmrc.LMRCTask.v1")
def make_lmrc_task(
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
    window_neighbours: int = 1,
) -> LMRCTask:
    """LMRC's RC task on the pairs of ``pair_source`` (``candidates``: the proposer's;
    ``all``; ``auto``: candidates, else every pair), able to reject a candidate: with
    ``allow_none`` the answer may be ``None``, and fine-tuning adds ``train_negatives`` pairs
    without relation per related pair, drawn from ``negative_source`` (``candidates``: the
    proposer's highest-scored candidates without relation, the pairs RC meets at inference;
    ``random``: a sample of all such pairs). Without ``allow_none`` every candidate gets a
    relation and training holds the related pairs only (``train_negatives`` unused).

    Local models get requests in ``prompt_format`` (default: compact). The backend returns
    every relation with LLM probability of at least ``min_probability`` (None: the greedy
    answer only), and ``fusion`` (:mod:`spacy_lmrc.fusion`; default the LLM's probability,
    kept from 0) turns the proposer's P(pair), the LLM's P(relation) and P(None) into the
    relation's score and keeps those reaching its threshold: ``spacy-lmrc tune-fusion``
    chooses both on dev. ``hint_top_m``: narrow each candidate's answer space to the
    proposer's best relation-type hints (None: the whole set). ``window_neighbours``: a
    document longer than the LLM's context is asked over windows of its sentences, each
    pair's mention sentences, and up to this many neighbours either side where a window's
    room allows.
    """
    return LMRCTask(labels=labels, labels_path=labels_path, pair_source=pair_source,
                    allow_none=allow_none, prompt_format=prompt_format or CompactFormat(),
                    fusion=fusion, min_probability=min_probability,
                    train_negatives=train_negatives, negative_source=negative_source,
                    hint_top_m=hint_top_m, window_neighbours=window_neighbours)


@registry.misc("spacy_lmrc.LMRCBaselineTask.v2")
def make_lmrc_baseline_task(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    fusion: ScoreFusion | None = None,
    min_probability: float | None = 0.05,
    train_negatives: float | None = None,
    window_neighbours: int = 1,
) -> LMRCTask:
    """The LLM-only baseline (LMRC section 3.2): every ordered pair, ``None`` allowed;
    ``train_negatives`` samples its training pairs without relation (None: every pair, as the
    paper). As ``spacy_lmrc.LMRCTask.v1``, the backend returns every relation the LLM gives at
    least ``min_probability`` (None: the greedy answer only) with its probability and
    ``None``'s, and ``fusion`` scores them and keeps those reaching its threshold: ``spacy-lmrc
    tune-fusion`` chooses both on dev, so a relation the LLM ranks below ``None`` can be kept
    when that pays on dev, as LMRC's are. ``prompt_format`` and ``window_neighbours`` as
    ``spacy_lmrc.LMRCTask.v1``."""
    return LMRCTask(labels=labels, labels_path=labels_path, pair_source="all", allow_none=True,
                    prompt_format=prompt_format or CompactFormat(), fusion=fusion,
                    min_probability=min_probability, train_negatives=train_negatives,
                    window_neighbours=window_neighbours)


@registry.misc("spacy_lmrc.LMRCBaselineTask.v1")
def make_lmrc_baseline_task_v1(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    threshold: float = 0.0,
    train_negatives: float | None = None,
    window_neighbours: int = 1,
) -> LMRCTask:
    """``spacy_lmrc.LMRCBaselineTask.v2`` decoding greedy answers only, each kept when the
    LLM's probability reaches ``threshold``."""
    return make_lmrc_baseline_task(labels_path=labels_path, labels=labels,
                                   prompt_format=prompt_format, fusion=LLMScore(threshold),
                                   min_probability=None, train_negatives=train_negatives,
                                   window_neighbours=window_neighbours)

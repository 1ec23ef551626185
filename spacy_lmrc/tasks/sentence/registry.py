"""The registered sentence task (RAG4RE): ``spacy_lmrc.SentenceRETask.v3``; ``.v2`` (the
vote's first settings) and ``.v1`` (configs written before the vote) build the same task with
their own decoding: the greedy label unless the examples vote."""

from __future__ import annotations

from spacy.util import registry

from ...corpus.sentence import SEMEVAL_NEGATIVE
from ...llm.formats import PromptFormat, SentenceFormat
from .task import DEFAULT_LABEL_FLOOR, SentenceRETask

#: negative training pairs kept at most 2x the mean positive label count (SemEval's train
#: split: about half of its ``Other`` sentences)
DEFAULT_NEGATIVE_RATIO = 2.0


@registry.misc("spacy_lmrc.SentenceRETask.v3")
def make_sentence_task(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    prompt_format: PromptFormat | None = None,
    use_examples: bool = True,
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    threshold: float = 0.0,
    negative_ratio: float | None = DEFAULT_NEGATIVE_RATIO,
    shown_examples: int | None = None,
    vote_weight: float = 0.0,
    label_floor: float | None = DEFAULT_LABEL_FLOOR,
) -> SentenceRETask:
    """Sentence-level RE (RAG4RE).

    labels / labels_path: the label set, as a list or a file (any shape
    :func:`~spacy_lmrc.corpus.labels.load_relation_set` reads, e.g. SemEval's
    ``relations.json``; a ``{label: name}`` file also gives display names); with neither, the
    ``llm_relation_classifier``'s ``initialize`` fills it (its ``labels`` setting, or the gold
    labels of its examples). prompt_format: the structured prompt (default
    ``spacy_lmrc.SentenceFormat.v1`` without the label list). use_examples: the retrieved
    examples go into the request (RAG4RE) or not (the simple query). label_names: display
    names for labels. threshold: least LLM probability of a positive label. negative_ratio:
    negative training pairs kept, at most this multiple of the mean positive label count
    (None: all). shown_examples: how many of the retrieved examples the prompt shows (None:
    all; the retriever's ``k`` sets how many are retrieved). vote_weight: weight of the
    examples' label vote fused with the LLM's answer (:mod:`~spacy_lmrc.tasks.sentence.vote`;
    0: none). label_floor: every label of at least this LLM probability is decoded and the
    most probable (with a vote: the best fused) is the answer; None: the greedy label, which
    may miss the most probable one and is faster only for an untuned model.
    """
    return SentenceRETask(
        labels, labels_path=labels_path, use_examples=use_examples,
        negative_label=negative_label, label_names=label_names,
        prompt_format=prompt_format or SentenceFormat(), threshold=threshold,
        negative_ratio=negative_ratio, shown_examples=shown_examples,
        vote_weight=vote_weight, label_floor=label_floor)


@registry.misc("spacy_lmrc.SentenceRETask.v2")
def make_sentence_task_v2(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    prompt_format: PromptFormat | None = None,
    use_examples: bool = True,
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    threshold: float = 0.0,
    negative_ratio: float | None = DEFAULT_NEGATIVE_RATIO,
    shown_examples: int | None = None,
    vote_weight: float = 0.0,
    vote_floor: float = DEFAULT_LABEL_FLOOR,
) -> SentenceRETask:
    """``.v3`` as it was before every request searched for the most probable label: the
    greedy label, or with a vote every label of at least ``vote_floor``."""
    return make_sentence_task(
        labels, labels_path=labels_path, prompt_format=prompt_format,
        use_examples=use_examples, negative_label=negative_label, label_names=label_names,
        threshold=threshold, negative_ratio=negative_ratio, shown_examples=shown_examples,
        vote_weight=vote_weight, label_floor=vote_floor if vote_weight else None)


# ``.v1`` named the task before the vote: its settings are a subset of ``.v2``'s, whose
# defaults for the rest leave the vote off
registry.misc.register("spacy_lmrc.SentenceRETask.v1", func=make_sentence_task_v2)

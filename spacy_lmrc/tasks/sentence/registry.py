"""The registered sentence task, ``spacy_lmrc.SentenceRETask.v1`` (RAG4RE)."""

from __future__ import annotations

from spacy.util import registry

from ...corpus.sentence import SEMEVAL_NEGATIVE
from ...llm.formats import PromptFormat, SentenceFormat
from .task import SentenceRETask

#: negative training pairs kept at most 2x the mean positive label count (SemEval's train
#: split: about half of its ``Other`` sentences)
DEFAULT_NEGATIVE_RATIO = 2.0


@registry.misc("spacy_lmrc.SentenceRETask.v1")
def make_sentence_task(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    prompt_format: PromptFormat | None = None,
    use_examples: bool = True,
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    threshold: float = 0.0,
    negative_ratio: float | None = DEFAULT_NEGATIVE_RATIO,
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
    (None: all).
    """
    return SentenceRETask(
        labels, labels_path=labels_path, use_examples=use_examples,
        negative_label=negative_label, label_names=label_names,
        prompt_format=prompt_format or SentenceFormat(), threshold=threshold,
        negative_ratio=negative_ratio)

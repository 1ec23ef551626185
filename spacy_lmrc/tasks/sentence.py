"""Sentence-level relation classification (RAG4RE): one label per entity pair of a sentence.

A sentence becomes one structured request: the sentence (and, with ``use_examples``, the
retrieved example sentence(s) of ``doc._.rag_examples``, which the ``rag4re_retriever`` writes)
as the shared prefix, one ``head | tail =>`` query per pair, and the label display names as the
answer space, one label per pair (the negative label, ``Other`` / ``no_relation``, is an
ordinary answer). Local models decode under a constraint to that space, so every answer is a
label, and a relation's ``score`` is the LLM's probability of its label. Text-only models get
RAG4RE's prompts (``rag4re`` with the examples, else ``simple_query``; the example's label is
not shown, as in RAG4RE) and the tolerant label parser (:mod:`spacy_lmrc.llm.text`).

Labels are shown to the LLM exactly as the corpus spells them (SemEval's
``Cause-Effect(e1,e2)``, TACRED's ``per:city_of_birth``) unless ``label_names`` maps them to
other display names; the prompt names the head entity ``e1`` and the tail ``e2``, so SemEval's
direction suffixes read naturally. The prompt format is ``spacy_lmrc.SentenceFormat.v1``;
``.v1`` renders it with the label list and the RAG4RE question (for prompt-only models), ``.v2``
takes it from the config (by default without the label list: fine-tuned models learn the set).
Fine-tuning uses the same requests with the gold label per pair
(:meth:`SentenceRETask.training_request`); ``negative_ratio`` caps the training pairs with the
negative label at a multiple of the mean positive label count, so the model does not learn to
answer ``Other`` / ``no_relation`` everywhere.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spacy.tokens import Doc
from spacy.util import registry

from ..corpus.labels import load_relation_set
from ..corpus.sentence import SEMEVAL_NEGATIVE, sentence_pair, strip_markup
from ..doc import Relation, mention_name, ordered_pairs
from ..errors import InputError
from ..llm.formats import PromptFormat, SentenceFormat, format_from_config
from ..llm.requests import Answer, PairQuery, RelationRequest
from .base import ParseStats, RelationTask

#: the instruction of ``.v1``'s structured prompt: RAG4RE's question (the labels are listed)
RAG4RE_INSTRUCTION = (
    "Problem Definition: Relation extraction is to identify the relationship between two "
    "entities in a sentence.\nQuestion: What is the relation type between the head entity and "
    "the tail entity of the sentence, according to the relation types given below?"
)
#: ``negative_ratio`` of ``.v2``: negative training pairs kept at most 2x the mean positive
#: label count (SemEval's train split: about half of its ``Other`` sentences)
DEFAULT_NEGATIVE_RATIO = 2.0


def rag4re_format(include_example_label: bool = False) -> SentenceFormat:
    """``.v1``'s structured prompt: RAG4RE's question and the label list (prompt-only models)."""
    return SentenceFormat(instruction=RAG4RE_INSTRUCTION, show_relations=True,
                          show_example_label=include_example_label)


class SentenceRETask(RelationTask):
    """One label per entity pair of a sentence (RAG4RE's sentence-level RE).

    use_examples: put the retrieved examples (``doc._.rag_examples``) into each request
        (RAG4RE; a Doc without them is an error); False: the simple query.
    prompt_format: how requests are rendered (default: :func:`rag4re_format`).
    threshold: the least LLM probability a positive label needs (below it the pair gets no
        relation).
    negative_ratio: fine-tuning keeps at most this multiple of the mean positive label count
        of training pairs with the negative label (a seeded sample); None keeps them all.
    """

    def __init__(self, labels: Sequence[str] | None = None, *,
                 labels_path: str | Path | None = None, use_examples: bool = True,
                 negative_label: str = SEMEVAL_NEGATIVE,
                 label_names: dict[str, str] | None = None,
                 prompt_format: PromptFormat | None = None, threshold: float = 0.0,
                 negative_ratio: float | None = None):
        if negative_ratio is not None and negative_ratio < 0:
            raise ValueError(f"negative_ratio must be at least 0 (or None), not {negative_ratio}")
        if labels is not None and labels_path is not None:
            raise ValueError("give labels (a list) or labels_path (a file), not both")
        named: dict[str, str] = {}
        if labels is None and labels_path is not None and Path(labels_path).exists():
            relation_set = load_relation_set(labels_path)
            labels = list(relation_set)
            named = {label: name for label, name in relation_set.items() if name != label}
        self.use_examples = use_examples
        self.negative_label = negative_label
        #: display names from the label file and the config (the config's win); they also
        #: apply to labels ``initialize`` brings
        self.label_names = {**named, **(label_names or {})}
        self._set_label_set(labels, check_names=True)
        # a label file missing while spaCy builds a saved pipeline: from_disk restores the set
        self.pending_labels_path = (str(labels_path) if labels is None
                                    and labels_path is not None else None)
        self.prompt_format = prompt_format or rag4re_format()
        self.threshold = threshold
        self.negative_ratio = negative_ratio
        self.training_counts: Counter = Counter()
        self._negative_keep = 1.0

    def _set_label_set(self, labels: Sequence[str] | None, *, check_names: bool = False,
                       display: Mapping[str, str] | None = None) -> None:
        """:attr:`labels` (label -> display name: ``display``, else :attr:`label_names`,
        else the label) with the negative label added, and the parser over them.
        ``labels=None`` leaves the set empty until :meth:`set_labels`; ``check_names``
        rejects configured display names of labels outside the set."""
        names = list(dict.fromkeys(labels)) if labels is not None else []
        if labels is not None and self.negative_label not in names:
            names.append(self.negative_label)
        unknown = set(self.label_names) - set(names)
        if labels is not None and check_names and unknown:
            raise ValueError(f"label_names names labels outside the label set: {sorted(unknown)}")
        shown = {**self.label_names, **(display or {})}
        self.labels = {label: shown.get(label, label) for label in names}

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace the label set (label -> display name), as the component's ``initialize``
        does. A label given as its own name keeps its configured display name, if any; the
        negative label is added when missing."""
        self._set_label_set(list(labels), display={label: name for label, name in labels.items()
                                                   if name != label})
        self.pending_labels_path = None

    # ---------------------------------------------------------------- prompts
    def select_pairs(self, doc: Doc) -> list[tuple[int, int]]:
        """The entity pairs to classify, by one rule:

        1. the proposer's ``doc._.relation_candidates``, when it ran;
        2. else the sentence's own pair (:func:`~spacy_lmrc.corpus.sentence.sentence_pair`:
           head ``<e1>`` / subject, tail ``<e2>`` / object), for Docs of the shape the
           SemEval and TACRED readers write;
        3. else (Docs from other readers, e.g. raw text) every ordered pair.
        """
        if doc._.relation_candidates:
            return [(c["head"], c["tail"]) for c in doc._.relation_candidates]
        marked = sentence_pair(doc)
        return [marked] if marked is not None else list(ordered_pairs(doc))

    def examples(self, doc: Doc) -> list[dict[str, Any]]:
        """The retrieved examples the request shows (labels as display names); none without
        :attr:`use_examples`."""
        if not self.use_examples:
            return []
        if not doc._.rag_examples:
            raise ValueError(
                f"the task puts retrieved examples into its requests (use_examples) but Doc "
                f"{doc._.title!r} has no doc._.rag_examples: add the 'rag4re_retriever' "
                f"component before the classifier (or set use_examples = false)")
        return [{**ex, "label": self.labels.get(ex["label"], ex["label"])}
                for ex in doc._.rag_examples]

    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        entities = doc._.entities
        queries = [PairQuery(head=mention_name(entities[h]), tail=mention_name(entities[t]),
                             head_type=entities[h].get("type", ""),
                             tail_type=entities[t].get("type", ""))
                   for h, t in pairs]
        return RelationRequest(text=strip_markup(doc.text), queries=queries,
                               answer_space=list(self.labels.values()), none_answer=None,
                               multi_label=False, examples=self.examples(doc),
                               labels=dict(self.labels))

    def relations_from_answers(self, doc: Doc, pairs: list[tuple[int, int]],
                               answers: list[Answer], stats: ParseStats) -> list[Relation]:
        """Relations from decoded answers: a positive label with its LLM probability as the
        score; the negative label, and labels below :attr:`threshold`, give none."""
        by_display = {display: label for label, display in self.labels.items()}
        relations: list[Relation] = []
        for (head, tail), answer in zip(pairs, answers):
            stats.add("pairs")
            if not answer:
                stats.add("unanswered")
                continue
            name, probability = answer[0]
            label = by_display[name]
            if label == self.negative_label:
                stats.add("negative")
            elif probability < self.threshold:
                stats.add("below_threshold")
            else:
                stats.add("relations")
                relations.append({"head": head, "tail": tail, "label": label,
                                  "score": round(probability, 6)})
        return relations

    def prepare_training(self, docs: Iterable[Doc]) -> None:
        """Count the gold labels of ``docs``' pairs and set how many negative pairs
        :meth:`training_request` keeps: at most :attr:`negative_ratio` times the mean count of
        the positive labels. Fine-tuning calls this once before the training requests."""
        counts: Counter = Counter()
        for doc in docs:
            gold = {(r["head"], r["tail"]): r["label"] for r in doc._.relations}
            for pair in self.select_pairs(doc):
                counts[gold.get(pair, self.negative_label)] += 1
        negatives = counts.pop(self.negative_label, 0)
        positive_labels = len(self.labels) - 1
        self._negative_keep = 1.0
        self.training_counts = Counter()
        if self.negative_ratio is not None and negatives and positive_labels:
            cap = self.negative_ratio * sum(counts.values()) / positive_labels
            self._negative_keep = min(1.0, cap / negatives)

    def training_request(self, doc: Doc, rng: random.Random | None = None
                         ) -> tuple[RelationRequest, list[list[str]]]:
        """A gold Doc's request and the target label (display name) of each query.

        Pairs with the negative label are kept with the probability :meth:`prepare_training`
        set (all of them before it runs); :attr:`training_counts` counts ``negative_pairs`` and
        ``negative_pairs_dropped``.
        """
        self.require_labels()
        rng = rng or random.Random(0)
        gold = {(r["head"], r["tail"]): r["label"] for r in doc._.relations}
        pairs, targets = [], []
        for pair in self.select_pairs(doc):
            label = gold.get(pair, self.negative_label)
            if label not in self.labels:
                raise InputError(f"sentence {doc._.title!r}: label {label!r} is not in the "
                                 f"task's label set ({len(self.labels)} labels)", field="labels")
            if label == self.negative_label:
                self.training_counts["negative_pairs"] += 1
                if self._negative_keep < 1.0 and rng.random() >= self._negative_keep:
                    self.training_counts["negative_pairs_dropped"] += 1
                    continue
            pairs.append(pair)
            targets.append([self.labels[label]])
        return self.request_for(doc, pairs), targets

    # ---------------------------------------------------------------- settings
    def get_config(self) -> dict[str, Any]:
        """Everything that shapes requests and answers (stored with fine-tuned models)."""
        return {"labels": list(self.labels), "label_names": self.labels,
                "use_examples": self.use_examples, "negative_label": self.negative_label,
                "prompt_format": self.prompt_format.config(), "threshold": self.threshold,
                "negative_ratio": self.negative_ratio}

    def set_config(self, cfg: dict[str, Any]) -> None:
        """Restore the settings :meth:`get_config` saved (``nlp.from_disk``); settings saved
        with a ``template`` name use the examples unless it was ``simple_query``, and those
        saved before the structured path existed get ``.v1``'s prompt format."""
        fmt = cfg.get("prompt_format")
        use_examples = cfg.get("use_examples", cfg.get("template") != "simple_query")
        self.__init__(cfg["labels"] or None, use_examples=use_examples,  # type: ignore[misc]
                      negative_label=cfg["negative_label"], label_names=cfg["label_names"],
                      prompt_format=format_from_config(fmt) if fmt else None,
                      threshold=cfg.get("threshold", 0.0),
                      negative_ratio=cfg.get("negative_ratio"))


@registry.misc("spacy_lmrc.SentenceRETask.v1")
def make_sentence_task(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    use_examples: bool = True,
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    include_example_label: bool = False,
) -> SentenceRETask:
    """Sentence-level RE task (RAG4RE).

    labels / labels_path: the label set, as a list or a file (any shape
    :func:`~spacy_lmrc.corpus.labels.load_relation_set` reads, e.g. SemEval's
    ``relations.json``; a ``{label: name}`` file also gives display names); with neither,
    the ``llm_relation_classifier``'s ``initialize`` fills it (its ``labels`` setting, or the
    gold labels of its examples).
    use_examples: the retrieved examples go into the request (RAG4RE; else the simple query).
    label_names: optional display names for labels. include_example_label: show the retrieved
    examples' labels (RAG4RE does not).
    """
    return SentenceRETask(labels, labels_path=labels_path, use_examples=use_examples,
                          negative_label=negative_label, label_names=label_names,
                          prompt_format=rag4re_format(include_example_label))


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
) -> SentenceRETask:
    """Sentence-level RE (RAG4RE) with a prompt format for local models, a probability
    threshold and class balance for fine-tuning.

    prompt_format: structured prompts (default ``spacy_lmrc.SentenceFormat.v1`` without the
    label list). use_examples: the retrieved examples go into the request (RAG4RE) or not (the
    simple query). threshold: least LLM probability of a positive label. negative_ratio:
    negative training pairs kept, at most this multiple of the mean positive label count
    (None: all). Other arguments as ``.v1``.
    """
    return SentenceRETask(
        labels, labels_path=labels_path, use_examples=use_examples,
        negative_label=negative_label, label_names=label_names,
        prompt_format=prompt_format or SentenceFormat(), threshold=threshold,
        negative_ratio=negative_ratio)


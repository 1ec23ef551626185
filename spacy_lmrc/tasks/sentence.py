"""Sentence-level relation classification prompts: RAG4RE's simple query and RAG4RE prompts.

One prompt per entity pair asks for exactly one label of the label set. Two templates, after the
RAG4RE code's SemEval/TACRED templates (and with every placeholder filled):

* ``simple_query``: question, sentence, head (e1) and tail (e2), relation types, output format;
* ``rag4re``: the same preceded by the problem definition and the retrieved example sentence(s)
  from ``doc._.rag_examples`` (the ``rag4re_retriever`` writes them). As in RAG4RE the example's
  label is not shown; ``include_example_label`` shows it (with its e1/e2) as a one-shot example.

How labels are shown and read back. Labels are shown to the LLM exactly as the corpus spells
them (SemEval's ``Cause-Effect(e1,e2)``, TACRED's ``per:city_of_birth``) unless ``label_names``
maps them to other display names; the prompt names the head entity ``e1`` and the tail ``e2``, so
SemEval's direction suffixes read naturally. The negative label (``Other``, ``no_relation``) is
part of the set shown. An answer is read in four steps, each counted in the :class:`ParseStats`:

1. ``exact``: the answer's first non-empty line, stripped of quotes/final period and an
   ``Answer:``/``relation_type:`` prefix, is a display name;
2. ``normalised``: lower-cased with everything but letters and digits removed, it equals a
   label's normalised name, or contains exactly one (longest-match; an answer that names several
   labels, e.g. an echo of the label list, counts as ``ambiguous``);
3. ``fuzzy``: thefuzz ``ratio`` of the normalised line against the normalised names reaches
   ``fuzzy_cutoff`` (a unique best match);
4. otherwise the negative label (``fallback_negative``; ``empty`` counts blank answers too).

The first answers that needed the fuzzy step or fell back are kept in ``ParseStats.samples``.

A positive label becomes ``{"head", "tail", "label", "score"}`` in ``doc._.relations`` (score 1.0,
or the fuzzy ratio / 100); the negative label becomes no relation.

Backends that control decoding (the local Hugging Face one) get a structured request instead
(:meth:`SentenceRETask.build_request`): the sentence (and, with the ``rag4re`` template, its
retrieved examples) as the shared prefix, one ``head | tail =>`` query per pair, and the label
display names as the answer space, one label per pair (the negative label is an ordinary
answer). Decoding is constrained to that space, so every answer is a label, and a relation's
``score`` is the LLM's probability of its label. The prompt format is
``spacy_lmrc.SentenceFormat.v1``; ``.v1`` renders it with the label list and the RAG4RE
question (for prompt-only models), ``.v2`` takes it from the config (by default without the
label list: fine-tuned models learn the set). Fine-tuning uses the same requests with the gold
label per pair (:meth:`SentenceRETask.training_request`); ``negative_ratio`` caps the training
pairs with the negative label at a multiple of the mean positive label count, so the model does
not learn to answer ``Other`` / ``no_relation`` everywhere.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spacy.tokens import Doc
from spacy.util import registry
from thefuzz import fuzz

from ..corpus.labels import load_relation_set
from ..corpus.sentence import SEMEVAL_NEGATIVE, sentence_pair, strip_markup
from ..doc import Relation, mention_name, ordered_pairs
from ..errors import InputError
from ..llm.formats import PromptFormat, SentenceFormat, format_from_config
from ..llm.requests import Answer, PairQuery, RelationRequest
from .base import ParseStats, PromptUnit, StructuredTask
from .resources import compile_template

_PREFIX = re.compile(r"^\s*(?:answer|relation(?:[ _]type)?|output|label)\s*[:=]\s*", re.I)
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


def normalise_label(text: str) -> str:
    """Lower case with everything but letters and digits removed (``Cause-Effect(e1,e2)`` ->
    ``causeeffecte1e2``)."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


class LabelParser:
    """Reads one label from an answer: exact, normalised, fuzzy, else the negative label."""

    def __init__(self, labels: dict[str, str], negative_label: str, fuzzy_cutoff: int = 85):
        self.labels = labels
        self.negative_label = negative_label
        self.fuzzy_cutoff = fuzzy_cutoff
        self.by_display = {display: label for label, display in labels.items()}
        self.by_normalised: dict[str, str] = {}
        for label, display in labels.items():
            for form in {normalise_label(display), normalise_label(label)}:
                if form:
                    self.by_normalised.setdefault(form, label)

    @staticmethod
    def first_line(answer: str) -> str:
        for line in answer.splitlines():
            line = _PREFIX.sub("", line.strip()).strip(" \t\"'`*")
            if line:
                return line[:-1] if line.endswith(".") else line
        return ""

    def parse(self, answer: str, stats: ParseStats) -> tuple[str, float]:
        """The label and a confidence for one answer; counts the step that decided it."""
        line = self.first_line(answer)
        if not line:
            stats.add("empty")
            stats.add("fallback_negative")
            return self.negative_label, 0.0
        if line in self.by_display:
            stats.add("exact")
            return self.by_display[line], 1.0
        norm = normalise_label(line)
        if norm in self.by_normalised:
            stats.add("normalised")
            return self.by_normalised[norm], 1.0
        contained = self._contained(norm)
        if len(contained) == 1:
            stats.add("normalised")
            return contained[0], 1.0
        if len(contained) > 1:
            stats.add("ambiguous")
            stats.add("fallback_negative")
            stats.sample("ambiguous", answer[:200])
            return self.negative_label, 0.0
        scored = sorted(((fuzz.ratio(norm, form), form) for form in self.by_normalised),
                        reverse=True)
        if scored and scored[0][0] >= self.fuzzy_cutoff and (
                len(scored) == 1 or scored[1][0] < scored[0][0]
                or self.by_normalised[scored[1][1]] == self.by_normalised[scored[0][1]]):
            stats.add("fuzzy")
            stats.sample("fuzzy", answer[:200])
            return self.by_normalised[scored[0][1]], scored[0][0] / 100
        stats.add("fallback_negative")
        stats.sample("fallback_negative", answer[:200])
        return self.negative_label, 0.0

    def _contained(self, norm: str) -> list[str]:
        """Labels whose normalised name occurs in ``norm``, minus those inside a longer match."""
        hits = [form for form in self.by_normalised if form in norm]
        kept = [f for f in hits if not any(f != g and f in g for g in hits)]
        return sorted({self.by_normalised[f] for f in kept})


class SentenceRETask(StructuredTask):
    """One label per entity pair of a sentence (RAG4RE's sentence-level RE).

    template: the text prompt (``rag4re``, ``simple_query`` or a Jinja2 file); a template that
        reads ``examples`` also puts the retrieved examples into structured requests.
    prompt_format: how structured requests are rendered (default: :func:`rag4re_format`).
    threshold: on the structured path, the least LLM probability a positive label needs
        (below it the pair gets no relation).
    negative_ratio: fine-tuning keeps at most this multiple of the mean positive label count
        of training pairs with the negative label (a seeded sample); None keeps them all.
    """

    def __init__(self, labels: Sequence[str] | None = None, *,
                 labels_path: str | Path | None = None, template: str = "rag4re",
                 negative_label: str = SEMEVAL_NEGATIVE,
                 label_names: dict[str, str] | None = None,
                 include_example_label: bool = False, fuzzy_cutoff: int = 85,
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
        self.template_name = template
        self.template, variables = compile_template(template)
        self.uses_examples = "examples" in variables
        self.negative_label = negative_label
        self.include_example_label = include_example_label
        self.fuzzy_cutoff = fuzzy_cutoff
        #: display names from the label file and the config (the config's win); they also
        #: apply to labels ``initialize`` brings
        self.label_names = {**named, **(label_names or {})}
        self._set_label_set(labels, check_names=True)
        # a label file missing while spaCy builds a saved pipeline: from_disk restores the set
        self.pending_labels_path = (str(labels_path) if labels is None
                                    and labels_path is not None else None)
        self.prompt_format = prompt_format or rag4re_format(include_example_label)
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
        self.parser = LabelParser(self.labels, self.negative_label, self.fuzzy_cutoff)

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
        """The retrieved examples the prompt shows (labels as display names); none unless the
        template reads them."""
        if not self.uses_examples:
            return []
        if not doc._.rag_examples:
            raise ValueError(
                f"the {self.template_name!r} template needs retrieved examples but Doc "
                f"{doc._.title!r} has no doc._.rag_examples: add the 'rag4re_retriever' "
                f"component before the classifier (or use template 'simple_query')")
        return [{**ex, "label": self.labels.get(ex["label"], ex["label"])}
                for ex in doc._.rag_examples]

    def render(self, doc: Doc, head: int, tail: int) -> str:
        """The prompt for one pair of ``doc``."""
        entities = doc._.entities
        examples = self.examples(doc)
        return self.template.render(
            sentence=strip_markup(doc.text),
            head=mention_name(entities[head]),
            tail=mention_name(entities[tail]),
            relation_types=", ".join(self.labels.values()),
            examples=examples,
            include_example_label=self.include_example_label,
        ).strip()

    def prompts_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> list[PromptUnit]:
        """One prompt per pair."""
        return [PromptUnit(self.render(doc, h, t), [(h, t)]) for h, t in pairs]

    # ---------------------------------------------------------------- answers
    def parse_responses(self, doc: Doc, units: list[PromptUnit], responses: list[str],
                        stats: ParseStats) -> list[Relation]:
        if len(units) != len(responses):
            raise ValueError(f"{len(units)} prompts but {len(responses)} answers")
        relations: list[Relation] = []
        for unit, answer in zip(units, responses):
            label, score = self.parser.parse(answer, stats)
            if label != self.negative_label:
                for head, tail in unit.pairs:
                    relations.append({"head": head, "tail": tail, "label": label, "score": score})
        return relations

    def training_examples(self, doc: Doc) -> list[tuple[str, str]]:
        """(prompt, display name of the gold label) per pair; the negative label included."""
        self.require_labels()
        gold = {(r["head"], r["tail"]): r["label"] for r in doc._.relations}
        return [(self.render(doc, h, t), self.labels.get(gold.get((h, t), self.negative_label),
                                                          gold.get((h, t), self.negative_label)))
                for h, t in self.select_pairs(doc)]

    def answer_token_budget(self, unit: PromptUnit) -> int | None:
        """An answer is one label: no label needs more tokens than it has characters (+ EOS
        and a little slack), so generation stops early instead of running to the backend's
        limit."""
        return max(len(display) for display in self.labels.values()) + 4

    # ---------------------------------------------------------------- structured requests
    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        entities = doc._.entities
        queries = [PairQuery(head=mention_name(entities[h]), tail=mention_name(entities[t]),
                             head_type=entities[h].get("type", ""),
                             tail_type=entities[t].get("type", ""))
                   for h, t in pairs]
        return RelationRequest(text=strip_markup(doc.text), queries=queries,
                               answer_space=list(self.labels.values()), none_answer=None,
                               multi_label=False, examples=self.examples(doc))

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
        if self.negative_ratio is not None and negatives and positive_labels:
            cap = self.negative_ratio * sum(counts.values()) / positive_labels
            self._negative_keep = min(1.0, cap / negatives)
        self.training_counts = Counter()

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
        """Everything that shapes prompts and answers (stored with fine-tuned models)."""
        return {"labels": list(self.labels), "label_names": self.labels,
                "template": self.template_name, "negative_label": self.negative_label,
                "include_example_label": self.include_example_label,
                "fuzzy_cutoff": self.fuzzy_cutoff,
                "prompt_format": self.prompt_format.config(), "threshold": self.threshold,
                "negative_ratio": self.negative_ratio}

    def set_config(self, cfg: dict[str, Any]) -> None:
        """Restore the settings :meth:`get_config` saved (``nlp.from_disk``); settings saved
        before the structured path existed get ``.v1``'s defaults."""
        fmt = cfg.get("prompt_format")
        self.__init__(cfg["labels"] or None, template=cfg["template"],  # type: ignore[misc]
                      negative_label=cfg["negative_label"], label_names=cfg["label_names"],
                      include_example_label=cfg["include_example_label"],
                      fuzzy_cutoff=cfg["fuzzy_cutoff"],
                      prompt_format=format_from_config(fmt) if fmt else None,
                      threshold=cfg.get("threshold", 0.0),
                      negative_ratio=cfg.get("negative_ratio"))


@registry.misc("spacy_lmrc.SentenceRETask.v1")
def make_sentence_task(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    template: str = "rag4re",
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    include_example_label: bool = False,
    fuzzy_cutoff: int = 85,
) -> SentenceRETask:
    """Sentence-level RE task (RAG4RE).

    labels / labels_path: the label set, as a list or a file (any shape
    :func:`~spacy_lmrc.corpus.labels.load_relation_set` reads, e.g. SemEval's
    ``relations.json``; a ``{label: name}`` file also gives display names); with neither,
    the ``llm_relation_classifier``'s ``initialize`` fills it (its ``labels`` setting, or the
    gold labels of its examples).
    template: ``rag4re``, ``simple_query`` or the path of a Jinja2 template.
    label_names: optional display names for labels. include_example_label: show the retrieved
    examples' labels (RAG4RE does not). fuzzy_cutoff: thefuzz ratio needed for a fuzzy match.
    """
    return SentenceRETask(labels, labels_path=labels_path, template=template,
                          negative_label=negative_label, label_names=label_names,
                          include_example_label=include_example_label,
                          fuzzy_cutoff=fuzzy_cutoff)


@registry.misc("spacy_lmrc.SentenceRETask.v2")
def make_sentence_task_v2(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    prompt_format: PromptFormat | None = None,
    template: str = "rag4re",
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    threshold: float = 0.0,
    negative_ratio: float | None = DEFAULT_NEGATIVE_RATIO,
    fuzzy_cutoff: int = 85,
) -> SentenceRETask:
    """Sentence-level RE (RAG4RE) with a prompt format for local models, a probability
    threshold and class balance for fine-tuning.

    prompt_format: structured prompts (default ``spacy_lmrc.SentenceFormat.v1`` without the
    label list); its ``show_example_label`` also decides whether the text template shows the
    examples' labels. template: ``rag4re`` (the retrieved examples go into the prompt) or
    ``simple_query`` (none), or a Jinja2 file for text-only backends. threshold: least LLM
    probability of a positive label. negative_ratio: negative training pairs kept, at most
    this multiple of the mean positive label count (None: all). Other arguments as ``.v1``.
    """
    fmt = prompt_format or SentenceFormat()
    return SentenceRETask(
        labels, labels_path=labels_path, template=template, negative_label=negative_label,
        label_names=label_names,
        include_example_label=bool(getattr(fmt, "show_example_label", False)),
        fuzzy_cutoff=fuzzy_cutoff, prompt_format=fmt, threshold=threshold,
        negative_ratio=negative_ratio)


# registers spacy_lmrc.RetrievedSentenceCorpus.v1, the reader that fine-tuning on RAG4RE prompts
# needs, wherever the task is available
from ..pipeline import rag_retriever as _rag_retriever  # noqa: E402,F401

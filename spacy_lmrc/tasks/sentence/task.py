"""The sentence task: a sentence's entity pair(s) as one relation request, gold sentences as
training requests (see :mod:`spacy_lmrc.tasks.sentence`)."""


from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spacy.tokens import Doc

from ...corpus.labels import load_relation_set
from ...corpus.sentence import SEMEVAL_NEGATIVE, sentence_pair, strip_markup
from ...doc import Relation, mention_name, ordered_pairs
from ...errors import InputError
from ...llm.formats import PromptFormat, SentenceFormat, format_from_config
from ...llm.requests import Answer, PairQuery, RelationRequest
from ..base import ParseStats, RelationTask
from .parser import relations_from_answers
from .vote import fuse_answer, vote_distribution

#: the least LLM probability a label is decoded for; the branch search finds every label of at
#: least 1%, the most probable among them for any set of up to 100 labels (it has 1/n or more;
#: above that the greedy label, always decoded too, stands in)
DEFAULT_LABEL_FLOOR = 0.01


class SentenceRETask(RelationTask):
    """One label per entity pair of a sentence (RAG4RE's sentence-level RE).

    use_examples: put the retrieved examples (``doc._.rag_examples``) into each request
        (RAG4RE; a Doc without them is an error); False: the simple query.
    prompt_format: how requests are rendered (default: ``spacy_lmrc.SentenceFormat.v1``).
    threshold: the least LLM probability a positive label needs (below it the pair gets no
        relation).
    negative_ratio: fine-tuning keeps at most this multiple of the mean positive label count
        of training pairs with the negative label (a seeded sample); None keeps them all.
    shown_examples: how many of the retrieved examples the prompt shows (the first ones; None:
        all of them); the others only vote.
    vote_weight: weight of the retrieved examples' label vote fused with the LLM's answer
        (:mod:`~spacy_lmrc.tasks.sentence.vote`); 0 keeps the LLM's answer.
    label_floor: the LLM is asked for every label of at least this probability and the
        answer is the most probable of them (with a vote: the best fused with it, the others
        counting as this much). None decodes the greedy label, token by token, which may
        miss the most probable label and is faster only where the probability spreads over
        many labels (an untuned model); a vote needs a floor.
    """

    def __init__(self, labels: Sequence[str] | None = None, *,
                 labels_path: str | Path | None = None, use_examples: bool = True,
                 negative_label: str = SEMEVAL_NEGATIVE,
                 label_names: dict[str, str] | None = None,
                 prompt_format: PromptFormat | None = None, threshold: float = 0.0,
                 negative_ratio: float | None = None, shown_examples: int | None = None,
                 vote_weight: float = 0.0,
                 label_floor: float | None = DEFAULT_LABEL_FLOOR):
        if negative_ratio is not None and negative_ratio < 0:
            raise ValueError(f"negative_ratio must be at least 0 (or None), not {negative_ratio}")
        if shown_examples is not None and shown_examples < 0:
            raise ValueError(f"shown_examples must be at least 0 (or None), not {shown_examples}")
        if vote_weight < 0:
            raise ValueError(f"vote_weight must be at least 0, not {vote_weight}")
        if label_floor is not None and not 0.0 < label_floor <= 1.0:
            raise ValueError(f"label_floor must be in (0, 1] (or None), not {label_floor}")
        if vote_weight and label_floor is None:
            raise ValueError("vote_weight needs a label_floor: the vote reranks the labels the "
                             "LLM gives at least that probability (label_floor = null decodes "
                             "only the greedy label)")
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
        self.prompt_format = prompt_format or SentenceFormat()
        self.threshold = threshold
        self.negative_ratio = negative_ratio
        self.shown_examples = shown_examples
        self.vote_weight = vote_weight
        self.label_floor = label_floor
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

    def retrieved(self, doc: Doc) -> list[dict[str, Any]]:
        """``doc._.rag_examples`` with labels as display names; an error where they are
        missing."""
        if not doc._.rag_examples:
            use = "use_examples" if self.use_examples else "vote_weight"
            raise ValueError(
                f"the task reads retrieved examples ({use}) but Doc {doc._.title!r} has no "
                f"doc._.rag_examples: add the 'rag4re_retriever' component before the "
                f"classifier (or set {use} = {'false' if self.use_examples else '0'})")
        return [{**ex, "label": self.labels.get(ex["label"], ex["label"])}
                for ex in doc._.rag_examples]

    def examples(self, doc: Doc) -> list[dict[str, Any]]:
        """The retrieved examples the request shows (the first :attr:`shown_examples`);
        none without :attr:`use_examples`."""
        if not self.use_examples:
            return []
        return self.retrieved(doc)[:self.shown_examples]

    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        entities = doc._.entities
        queries = [PairQuery(head=mention_name(entities[h]), tail=mention_name(entities[t]),
                             head_type=entities[h].get("type", ""),
                             tail_type=entities[t].get("type", ""))
                   for h, t in pairs]
        return RelationRequest(text=strip_markup(doc.text), queries=queries,
                               answer_space=list(self.labels.values()), none_answer=None,
                               multi_label=False, examples=self.examples(doc),
                               labels=dict(self.labels),
                               min_probability=self.label_floor)

    def relations_from_answers(self, doc: Doc, pairs: list[tuple[int, int]],
                               answers: list[Answer], stats: ParseStats) -> list[Relation]:
        """Relations from the answers (see
        :func:`~spacy_lmrc.tasks.sentence.parser.relations_from_answers`), each first fused
        with the retrieved examples' vote where :attr:`vote_weight` is set (``vote_changed``
        counts the answers it changed)."""
        if self.vote_weight:
            answers = self.voted(doc, answers, stats)
        return relations_from_answers(pairs, answers, stats, labels=self.labels,
                                      negative_label=self.negative_label,
                                      threshold=self.threshold)

    def voted(self, doc: Doc, answers: list[Answer], stats: ParseStats) -> list[Answer]:
        """``answers`` fused with the vote of ``doc``'s retrieved examples."""
        vote = vote_distribution([ex["label"] for ex in self.retrieved(doc)],
                                 list(self.labels.values()))
        fused = []
        for answer in answers:
            if answer:
                voted = fuse_answer(answer, vote, weight=self.vote_weight,
                                    floor=self.label_floor)
                stats.add("vote_changed", int(voted[0][0] != answer[0][0]))
                answer = voted
            fused.append(answer)
        return fused

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
                "negative_ratio": self.negative_ratio, "shown_examples": self.shown_examples,
                "vote_weight": self.vote_weight, "label_floor": self.label_floor}

    def set_config(self, cfg: dict[str, Any]) -> None:
        """Restore the settings :meth:`get_config` saved (``nlp.from_disk``, a classifier
        folder). Settings of earlier layouts: a prompt named by ``template`` shows the
        examples unless it was ``simple_query``; without ``label_floor`` the task decoded the
        greedy label unless it voted (at ``vote_floor``)."""
        use_examples = cfg.get("use_examples", cfg.get("template") != "simple_query")
        vote_weight = cfg.get("vote_weight", 0.0)
        label_floor = cfg.get("label_floor", cfg.get("vote_floor", DEFAULT_LABEL_FLOOR)
                              if vote_weight else None)
        self.__init__(cfg["labels"] or None, use_examples=use_examples,  # type: ignore[misc]
                      negative_label=cfg["negative_label"], label_names=cfg["label_names"],
                      prompt_format=format_from_config(cfg["prompt_format"]),
                      threshold=cfg["threshold"], negative_ratio=cfg["negative_ratio"],
                      shown_examples=cfg.get("shown_examples"),
                      vote_weight=vote_weight, label_floor=label_floor)

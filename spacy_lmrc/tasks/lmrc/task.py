"""The LMRC task: a document's entity pairs as one relation request, gold Docs as training
requests (see :mod:`spacy_lmrc.tasks.lmrc`)."""


from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spacy.tokens import Doc

from ...corpus.labels import load_relation_set
from ...doc import Relation, ordered_pairs
from ...errors import InputError
from ...fusion import LLMScore, ScoreFusion, fusion_from_config
from ...llm.formats import PaperFormat, PromptFormat, format_from_config
from ...llm.requests import Answer, EntityNames, PairQuery, RelationRequest
from ...llm.sequences import ContextFit
from ..base import ParseStats, RelationTask
from .parser import NONE_NAME, relations_from_answers
from .windows import ContextMeter, WindowedRequests, window_requests

PAIR_SOURCES = ("auto", "candidates", "all")
#: where training pairs without relation come from: a seeded sample of every pair without
#: relation, or the document's proposer candidates without relation, highest-scored first
NEGATIVE_SOURCES = ("random", "candidates")


class LMRCTask(RelationTask):
    """One request per document: its entity pairs as queries, relation names as answers.

    labels / labels_path: the relation set ``{label: name}``, or a file of it (any shape
        :func:`~spacy_lmrc.corpus.labels.load_relation_set` reads). Without
        either the task starts empty and the component's ``initialize`` fills it; a
        ``labels_path`` missing while a saved pipeline is built is restored by ``from_disk``.

    pair_source: where the pairs to classify come from: ``candidates`` (the proposer's pairs
        only; a Doc without any gets no query: use this behind a proposer), ``all`` (every
        ordered pair, the baseline's candidate space) or ``auto`` (candidates when the Doc
        has some, else every ordered pair: for pipelines that may run without a proposer).
    allow_none: answers may say ``None`` (the baseline; the RC behind a proposer); training
        targets say ``None`` for the training pairs without relation.
    prompt_format: how requests are rendered for local models (default: paper).
    fusion: each relation's score from the proposer's and the LLM's probabilities, and the
        least score kept (default: the LLM's probability, from 0).
    min_probability: ask the backend for every relation the LLM gives at least this
        probability (and ``None``'s), not only its greedy answer, so a pair may get several
        relations and the fusion sees the alternatives; None = greedy only.
    train_negatives: training pairs without relation (with ``allow_none``), as a multiple of
        the document's pairs with relations; None = every pair, as in the paper.
    negative_source: where those pairs come from, see :data:`NEGATIVE_SOURCES`.
    hint_top_m: narrow each candidate pair's answer space to the proposer's ``hint_top_m``
        best relation-type hints (``doc._.relation_candidates`` ``"hints"``); None = the whole
        relation set.
    window_neighbours: a document longer than the LLM's context is asked over windows of its
        sentences (:mod:`.windows`): each pair's mention sentences, and up to this many
        sentences either side of a window's sentences where its room allows.
    """

    def __init__(
        self,
        labels: dict[str, str] | None = None,
        labels_path: str | Path | None = None,
        pair_source: str = "auto",
        allow_none: bool = False,
        prompt_format: PromptFormat | None = None,
        fusion: ScoreFusion | None = None,
        min_probability: float | None = None,
        train_negatives: float | None = None,
        negative_source: str = "random",
        hint_top_m: int | None = None,
        window_neighbours: int = 1,
    ) -> None:
        if pair_source not in PAIR_SOURCES:
            raise ValueError(f"pair_source must be one of {PAIR_SOURCES}, not {pair_source!r}")
        if negative_source not in NEGATIVE_SOURCES:
            raise ValueError(f"negative_source must be one of {NEGATIVE_SOURCES}, not "
                             f"{negative_source!r}")
        if min_probability is not None and not 0.0 < min_probability <= 1.0:
            raise ValueError(f"min_probability must be in (0, 1] or None, not {min_probability}")
        if hint_top_m is not None and hint_top_m < 1:
            raise ValueError(f"hint_top_m must be at least 1 or None, not {hint_top_m}")
        if window_neighbours < 0:
            raise ValueError(f"window_neighbours must be 0 or more, not {window_neighbours}")
        if labels is not None:
            self.labels = dict(labels)
        elif labels_path is not None and Path(labels_path).exists():
            self.labels = load_relation_set(labels_path)
        else:
            self.labels = {}
            self.pending_labels_path = None if labels_path is None else str(labels_path)
        self.pair_source = pair_source
        self.allow_none = allow_none
        self.prompt_format = prompt_format or PaperFormat()
        self.fusion = fusion or LLMScore()
        self.min_probability = min_probability
        self.train_negatives = train_negatives
        self.negative_source = negative_source
        self.training_counts = Counter()
        self.hint_top_m = hint_top_m
        self.window_neighbours = window_neighbours

    def select_pairs(self, doc: Doc) -> list[tuple[int, int]]:
        """The ordered entity pairs to classify, in (head, tail) order."""
        candidates = doc._.relation_candidates
        if self.pair_source == "all" or (self.pair_source == "auto" and not candidates):
            return list(ordered_pairs(doc))
        n = len(doc._.entities)
        pairs = sorted({(c["head"], c["tail"]) for c in doc._.relation_candidates})
        for head, tail in pairs:
            if not (0 <= head < n and 0 <= tail < n) or head == tail:
                raise InputError(f"document {doc._.title!r}: candidate pair ({head}, {tail}) "
                                 f"does not name two entities of the document's {n}",
                                 field="relation_candidates")
        return pairs

    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        entities = doc._.entities
        spaces = self._hinted_spaces(doc)
        queries = []
        for head, tail in pairs:
            queries.append(PairQuery(
                head=entities[head]["name"], tail=entities[tail]["name"],
                head_type=entities[head]["type"], tail_type=entities[tail]["type"],
                answer_space=spaces.get((head, tail)), head_id=head, tail_id=tail,
            ))
        return RelationRequest(text=doc.text, queries=queries,
                               answer_space=list(self.labels.values()),
                               none_answer=NONE_NAME if self.allow_none else None,
                               labels=dict(self.labels),
                               entities=[EntityNames(ent["name"],
                                                     [m["name"] for m in ent["mentions"]])
                                         for ent in entities],
                               min_probability=self.min_probability)

    def window_requests(self, doc: Doc, pairs: list[tuple[int, int]], fit: ContextFit,
                        meter: ContextMeter) -> WindowedRequests:
        """``doc``'s requests for ``pairs`` when its whole request does not ``fit`` the LLM's
        context: one per window of its sentences, each the request :meth:`request_for` builds
        for the window's pairs with the window's text (see :mod:`.windows`)."""
        return window_requests(doc, pairs, fit, lambda chosen: self.request_for(doc, chosen),
                               meter, self.prompt_format, self.window_neighbours)

    def _hinted_spaces(self, doc: Doc) -> dict[tuple[int, int], list[str]]:
        """Per candidate pair, the names of its ``hint_top_m`` best hinted relation types (none
        without ``hint_top_m`` or without hints: such pairs keep the whole relation set)."""
        if self.hint_top_m is None:
            return {}
        spaces = {}
        for cand in doc._.relation_candidates:
            names = [self.labels[h["label"]] for h in cand.get("hints") or ()
                     if h["label"] in self.labels][:self.hint_top_m]
            if names:
                spaces[(cand["head"], cand["tail"])] = names
        return spaces

    def relations_from_answers(self, doc: Doc, pairs: list[tuple[int, int]],
                               answers: list[Answer], stats: ParseStats) -> list[Relation]:
        """Relations from the answers, scored by the task's :attr:`fusion` (see
        :func:`~spacy_lmrc.tasks.lmrc.parser.relations_from_answers`)."""
        return relations_from_answers(doc, pairs, answers, stats, labels=self.labels,
                                      allow_none=self.allow_none, fusion=self.fusion)

    def training_request(self, doc: Doc, rng: random.Random | None = None
                         ) -> tuple[RelationRequest, list[list[str]]]:
        """A gold Doc's request and the target relation names of each query.

        The pairs that hold relations, and with :attr:`allow_none` pairs without relation
        answered ``None``: every such pair, or :attr:`train_negatives` times as many as the
        related pairs, drawn from :attr:`negative_source` (a seeded sample, or the proposer's
        highest-scored candidates without relation). What was drawn is counted in
        :attr:`training_counts`.
        """
        self.require_labels()
        gold: dict[tuple[int, int], list[str]] = {}
        for rel in doc._.relations:
            if rel["label"] not in self.labels:
                raise InputError(f"document {doc._.title!r}: relation {rel['label']!r} is not in "
                                 f"the task's relation set ({len(self.labels)} labels)",
                                 field="labels")
            names = gold.setdefault((rel["head"], rel["tail"]), [])
            if self.labels[rel["label"]] not in names:
                names.append(self.labels[rel["label"]])
        pairs = sorted(gold)
        if self.allow_none:
            pairs = sorted(pairs + self._training_negatives(doc, gold, rng))
        targets = [gold.get(pair, [NONE_NAME]) for pair in pairs]
        return self.request_for(doc, pairs), targets

    def _training_negatives(self, doc: Doc, gold: Mapping[tuple[int, int], list[str]],
                            rng: random.Random | None) -> list[tuple[int, int]]:
        """The training pairs without relation of ``doc`` (see :meth:`training_request`)."""
        counts = self.training_counts
        wanted = (None if self.train_negatives is None
                  else round(self.train_negatives * max(1, len(gold))))
        if self.negative_source == "candidates":
            if not doc._.relation_candidates and len(doc._.entities) > 1:
                raise InputError(f"document {doc._.title!r} has no proposer candidates to draw "
                                 "training negatives from: read the training corpus through "
                                 "spacy_lmrc.ProposedCorpus.v1, or set negative_source = "
                                 "\"random\"", field="relation_candidates")
            ranked = sorted(doc._.relation_candidates, key=lambda c: -float(c["score"]))
            negatives = [(c["head"], c["tail"]) for c in ranked
                         if (c["head"], c["tail"]) not in gold and c["head"] != c["tail"]]
            negatives = negatives[:wanted] if wanted is not None else negatives
        else:
            negatives = [p for p in ordered_pairs(doc) if p not in gold]
            if wanted is not None:
                negatives = (rng or random.Random(0)).sample(negatives,
                                                             min(len(negatives), wanted))
        counts["negative_pairs"] = counts.get("negative_pairs", 0) + len(negatives)
        counts["related_pairs"] = counts.get("related_pairs", 0) + len(gold)
        return negatives

    # settings -----------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Everything that shapes the prompt, so inference can match fine-tuning exactly."""
        return {
            "labels": self.labels,
            "pair_source": self.pair_source,
            "allow_none": self.allow_none,
            "prompt_format": self.prompt_format.config(),
            "fusion": self.fusion.config(),
            "min_probability": self.min_probability,
            "train_negatives": self.train_negatives,
            "negative_source": self.negative_source,
            "hint_top_m": self.hint_top_m,
            "window_neighbours": self.window_neighbours,
        }

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace the relation set (the component's ``initialize`` does)."""
        self.labels = dict(labels)
        self.pending_labels_path = None

    def set_config(self, settings: dict[str, Any]) -> None:
        """Restore what :meth:`get_config` returned (``from_disk``, a classifier folder).
        Settings of text prompts that classifier folders of the earlier layout saved with the
        task (``template_text``, ``pairs_per_prompt``...) belong to the text format and are
        left to it."""
        known = set(self.get_config()) | {"threshold"}
        for key, value in settings.items():
            if key not in known:
                continue
            if key == "prompt_format":
                value = format_from_config(value)
            elif key == "fusion":
                value = fusion_from_config(value)
            elif key == "threshold":  # saved before the fusion existed: the LLM's probability
                key, value = "fusion", LLMScore(value)
            setattr(self, key, value)
        if self.labels:
            self.pending_labels_path = None

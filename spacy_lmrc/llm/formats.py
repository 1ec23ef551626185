"""Prompt formats: how a :class:`~spacy_lmrc.llm.requests.RelationRequest` becomes text.

A format renders two pieces, tokenized separately so training and inference see the very same
ids (:mod:`spacy_lmrc.llm.sequences`): the shared prefix and one query per pair. Answers are
token sequences of the answer space (:class:`~spacy_lmrc.llm.constraints.AnswerSpace`): relation
names joined by the format's separator, then the end token.

* ``spacy_lmrc.CompactFormat.v1``: for fine-tuned local models. No relation list in the
  prompt (the answer space is enforced by decoding and learnt in training), entity types
  shown, one short line per pair: ``Marie Curie (PER) | Warsaw (LOC) => place of birth``.
* ``spacy_lmrc.PaperFormat.v1``: LMRC appendix A's instruction and relation set with the pair
  written ``(head| -| tail)``; what a prompt-only model needs.
* ``spacy_lmrc.SentenceFormat.v1``: sentence-level RE (RAG4RE): instruction, the retrieved
  example sentence(s) (their labels only with ``show_example_label``; RAG4RE shows none), the
  query sentence, and one ``head | tail =>`` line per pair.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from spacy.util import registry

from .requests import PairQuery, RelationRequest

COMPACT_INSTRUCTION = "Name the relations between entity pairs of the text."
SENTENCE_INSTRUCTION = "Name the relation between the two entities of the sentence."
PAPER_INSTRUCTION = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nThis is a relation classification task. We will provide entity pairs "
    "that require relation classification. Your task is to select relations for each entity "
    "pair from the given relation set based on the information in the text. There may be "
    "multiple relations between an entity pair."
)


class PromptFormat(ABC):
    """Renders a request's prefix and queries; ``separator`` joins several relations."""

    name: str
    separator: str = ";"

    @abstractmethod
    def prefix(self, request: RelationRequest) -> str:
        """Text shared by every query of ``request`` (encoded once per request)."""

    @abstractmethod
    def query(self, query: PairQuery) -> str:
        """The text of one pair's question, ending where the answer starts."""

    def config(self) -> dict[str, Any]:
        """What identifies this format; stored with fine-tuned models and checked on load."""
        return {"name": self.name}


def _example_lines(request: RelationRequest) -> str:
    return "".join(f"Example: {ex['text']}\n{ex['head']} | {ex['tail']} => {ex['label']}\n"
                   for ex in request.examples)


class CompactFormat(PromptFormat):
    """Short prefix and one line per pair, for fine-tuned local models.

    instruction: the first line of the prefix.
    show_types: write each entity's type after its name (``(PER)``).
    show_relations: list the answer space in the prefix (off: decoding enforces it).
    """

    name = "compact"

    def __init__(self, instruction: str = COMPACT_INSTRUCTION, show_types: bool = True,
                 show_relations: bool = False) -> None:
        self.instruction = instruction
        self.show_types = show_types
        self.show_relations = show_relations

    def prefix(self, request: RelationRequest) -> str:
        relations = (f"Relations: {'; '.join(request.answer_space)}\n"
                     if self.show_relations else "")
        return f"{self.instruction}\n{relations}{_example_lines(request)}Text: {request.text}\n"

    def _entity(self, name: str, entity_type: str) -> str:
        return f"{name} ({entity_type})" if self.show_types and entity_type else name

    def query(self, query: PairQuery) -> str:
        return (f"\n{self._entity(query.head, query.head_type)} | "
                f"{self._entity(query.tail, query.tail_type)} =>")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "instruction": self.instruction,
                "show_types": self.show_types, "show_relations": self.show_relations}


class PaperFormat(PromptFormat):
    """LMRC appendix A, one pair per query: instruction, relation set, text, ``(h| -| t)``."""

    name = "paper"

    def prefix(self, request: RelationRequest) -> str:
        examples = _example_lines(request)
        return (f"{PAPER_INSTRUCTION}\n\n### Relation set:\n{'; '.join(request.answer_space)}\n\n"
                f"{examples}### Text:\n{request.text}\n")

    def query(self, query: PairQuery) -> str:
        return (f"\n### Entity pair:\n({query.head}| -| {query.tail})\n"
                f"### Response:\n({query.head}|")


class SentenceFormat(PromptFormat):
    """One sentence (and its retrieved examples) as the prefix; ``head | tail =>`` per pair.

    instruction: the first line of the prefix.
    show_example_label: write each retrieved example's pair and label under it (RAG4RE shows
        the example sentence only).
    show_relations: list the answer space in the prefix (off: decoding enforces it).
    show_types: write each entity's type after its name (TACRED's ``PERSON``; SemEval has none
        worth showing).
    """

    name = "sentence"

    def __init__(self, instruction: str = SENTENCE_INSTRUCTION, show_example_label: bool = False,
                 show_relations: bool = False, show_types: bool = False) -> None:
        self.instruction = instruction
        self.show_example_label = show_example_label
        self.show_relations = show_relations
        self.show_types = show_types

    def prefix(self, request: RelationRequest) -> str:
        relations = (f"Relations: {'; '.join(request.answer_space)}\n"
                     if self.show_relations else "")
        examples = ""
        for ex in request.examples:
            examples += f"Example: {ex['text']}\n"
            if self.show_example_label:
                examples += f"{ex['head']} | {ex['tail']} => {ex['label']}\n"
        return f"{self.instruction}\n{relations}{examples}Sentence: {request.text}\n"

    def _entity(self, name: str, entity_type: str) -> str:
        return f"{name} ({entity_type})" if self.show_types and entity_type else name

    def query(self, query: PairQuery) -> str:
        return (f"{self._entity(query.head, query.head_type)} | "
                f"{self._entity(query.tail, query.tail_type)} =>")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "instruction": self.instruction,
                "show_example_label": self.show_example_label,
                "show_relations": self.show_relations, "show_types": self.show_types}


@registry.misc("spacy_lmrc.CompactFormat.v1")
def make_compact_format(instruction: str = COMPACT_INSTRUCTION, show_types: bool = True,
                        show_relations: bool = False) -> PromptFormat:
    """The compact format for fine-tuned local models (the default)."""
    return CompactFormat(instruction=instruction, show_types=show_types,
                         show_relations=show_relations)


@registry.misc("spacy_lmrc.PaperFormat.v1")
def make_paper_format() -> PromptFormat:
    """LMRC appendix A's prompt, one pair per query."""
    return PaperFormat()


@registry.misc("spacy_lmrc.SentenceFormat.v1")
def make_sentence_format(instruction: str = SENTENCE_INSTRUCTION,
                         show_example_label: bool = False, show_relations: bool = False,
                         show_types: bool = False) -> PromptFormat:
    """The sentence-level format (RAG4RE): examples and sentence once, one line per pair."""
    return SentenceFormat(instruction=instruction, show_example_label=show_example_label,
                          show_relations=show_relations, show_types=show_types)


def format_from_config(config: dict[str, Any]) -> PromptFormat:
    """The format :meth:`PromptFormat.config` describes (used when a pipeline is loaded)."""
    settings = {k: v for k, v in config.items() if k != "name"}
    if config.get("name") == "compact":
        return CompactFormat(**settings)
    if config.get("name") == "paper":
        return PaperFormat()
    if config.get("name") == "sentence":
        return SentenceFormat(**settings)
    raise ValueError(f"unknown prompt format {config.get('name')!r} (expected compact, paper "
                     "or sentence)")

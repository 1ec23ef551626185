"""The structured request a task hands to a backend: one shared prefix, many pair queries.

Per document the LLM's work is one prefix (instruction, text, optional examples) and many
short, independent questions (one per entity pair) whose answers come from a small closed set.
Backends that control decoding use this structure (prefix encoded once, pairs answered as one
batch, answers constrained to the set); text-only backends render it as text prompts
(:mod:`spacy_lmrc.llm.text`) and read their answers back with the tolerant parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EntityNames:
    """The names of one entity of the request's text: its display name and its mentions'
    surface names (a text answer may name an entity by any of them)."""

    name: str
    mentions: list[str] = field(default_factory=list)


@dataclass
class PairQuery:
    """One question: which relations hold from ``head`` to ``tail``?

    answer_space: label names this pair may take (e.g. the proposer's type hints); None means
    the request's whole answer space.
    head_id / tail_id: the pair's entities as indices into ``RelationRequest.entities`` (text
        answers name entities by string and are aligned back to them).
    """

    head: str
    tail: str
    head_type: str = ""
    tail_type: str = ""
    answer_space: list[str] | None = None
    head_id: int | None = None
    tail_id: int | None = None


@dataclass
class RelationRequest:
    """A document's (or sentence's) questions over one shared prefix.

    text: the document or sentence the relations are read from.
    answer_space: the relation names an answer may contain.
    none_answer: the name meaning "no relation" (the LLM-only baseline's ``None``), answered
        alone; None when every pair must get a relation (LMRC's RC stage).
    multi_label: whether one pair may get several relations.
    examples: retrieved or few-shot examples (``{"text", "head", "tail", "label"}``) shown in
        the prefix.
    labels: the relation set ``{label: name}`` the names of ``answer_space`` come from (a text
        answer may give a label where its name is expected).
    entities: every entity of the text, by name (text answers are aligned back to them).
    min_probability: None answers each query greedily (the names as the model writes them,
        separator-joined). A value τ in (0, 1] also lists every name whose probability as
        the answer's first name is at least τ (the ``none_answer`` too), merged with the
        greedy answer, best first, so a pair can get several relations and P(none_answer)
        is known even where greedy decoding stops at another name. Only backends that
        constrain decoding (``HFBackend``) use it; text-only backends ignore it.
    """

    text: str
    queries: list[PairQuery]
    answer_space: list[str]
    none_answer: str | None = None
    multi_label: bool = True
    examples: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    entities: list[EntityNames] = field(default_factory=list)
    min_probability: float | None = None

    def __post_init__(self) -> None:
        if self.min_probability is not None and not 0.0 < self.min_probability <= 1.0:
            raise ValueError(f"min_probability must be in (0, 1], not {self.min_probability}")

    def space_of(self, query: PairQuery) -> list[str]:
        """The names ``query`` may be answered with (the ``none_answer`` included)."""
        names = list(query.answer_space if query.answer_space is not None else self.answer_space)
        if self.none_answer is not None and self.none_answer not in names:
            names.append(self.none_answer)
        return names


#: an answer: (relation name, the model's probability of it) per relation, best first; the
#: probability is None for a name read from a text answer, where the model gave none
Answer = list[tuple[str, "float | None"]]

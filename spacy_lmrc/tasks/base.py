"""The task interface shared by document-level (LMRC) and sentence-level (RAG4RE) tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spacy.tokens import Doc

from ..doc import Relation
from ..errors import InputError

if TYPE_CHECKING:
    import random

    from ..llm.formats import PromptFormat
    from ..llm.requests import Answer, RelationRequest


@dataclass
class PromptUnit:
    """One prompt for one Doc, and the entity pairs whose answer it carries."""

    text: str
    pairs: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ParseStats:
    """Counts of what the parser did with the answers: nothing is lost without a count.

    Keys are task-specific (e.g. ``lines``, ``unparsable``, ``out_of_set``, ``aligned``,
    ``unaligned_entity``, ``exact``, ``normalised``, ``fuzzy``, ``fallback_negative``).
    """

    counts: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    max_samples: int = 20

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def sample(self, key: str, text: str) -> None:
        """Keep the first few offending strings (e.g. unparsable lines) for the report."""
        kept = self.samples.setdefault(key, [])
        if len(kept) < self.max_samples:
            kept.append(text)

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)


class RelationTask(ABC):
    """Turns Docs into prompts and LLM answers into relations.

    ``labels`` maps a relation label as stored in ``doc._.relations`` (e.g. ``P17``) to the
    name the LLM sees in prompts (e.g. ``country``).
    """

    labels: dict[str, str]
    #: the relation-set file when it was missing as the task was built: normal while spaCy
    #: builds a saved pipeline elsewhere (``from_disk`` then restores the set), an error on use
    pending_labels_path: str | None = None

    def require_labels(self) -> None:
        """Raise when the relation set never arrived: a missing label file (see
        :attr:`pending_labels_path`), or no labels in the config and no ``initialize``."""
        if self.pending_labels_path is not None:
            raise InputError("relation label file not found, and no saved pipeline restored "
                             "the task's relation set", path=self.pending_labels_path,
                             field="labels_path")
        if not self.labels:
            raise InputError("the task has no relation set: give labels or labels_path in its "
                             "config, or initialize the component (nlp.initialize) with labels "
                             "or with examples whose gold relations name them", field="labels")

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace the relation set (label -> name shown to the LLM), as ``initialize`` does.

        Tasks whose relation set can only come from their config keep this default.
        """
        raise TypeError(f"{type(self).__name__} takes its relation set from its config only; "
                        f"set the labels there instead of passing them to initialize")

    @abstractmethod
    def select_pairs(self, doc: Doc) -> list[tuple[int, int]]:
        """The ordered entity pairs of ``doc`` to classify (the candidates, if set)."""

    @abstractmethod
    def prompts_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> list[PromptUnit]:
        """The prompts asking about ``pairs`` of ``doc``, each pair in one of them (reads
        retrieved examples if set)."""

    def generate_prompts(self, doc: Doc) -> list[PromptUnit]:
        """The prompts to send for ``doc``: those for its :meth:`select_pairs`."""
        self.require_labels()
        return self.prompts_for(doc, self.select_pairs(doc))

    @abstractmethod
    def parse_responses(
        self, doc: Doc, units: list[PromptUnit], responses: list[str], stats: ParseStats
    ) -> list[Relation]:
        """Relations read from the answers to ``units``; counts what happened in ``stats``."""

    @abstractmethod
    def training_examples(self, doc: Doc) -> list[tuple[str, str]]:
        """(prompt, target answer) pairs from a gold Doc, for supervised fine-tuning."""

    def answer_token_budget(self, unit: PromptUnit) -> int | None:
        """Most new tokens an answer to ``unit`` can need (None: the backend's own limit)."""
        return None

    def get_config(self) -> dict[str, Any]:
        """Settings to store with a fine-tuned model so inference prompts match training."""
        return {}


class StructuredTask(RelationTask):
    """A task that also speaks in structured requests, for backends that control decoding:
    the document (or sentence) once as a shared prefix, one query per entity pair, answers
    from the relation set.

    The component and fine-tuning choose this path by duck typing (the task has
    ``build_request`` / ``training_request``), so a task may offer it without subclassing;
    subclasses get :meth:`build_request` from here, as every task gets
    :meth:`~RelationTask.generate_prompts`.
    """

    #: how requests are rendered for the model (stored with fine-tuned weights)
    prompt_format: PromptFormat

    @abstractmethod
    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        """The request asking about ``pairs`` of ``doc``, one query per pair, in order."""

    def build_request(self, doc: Doc) -> tuple[RelationRequest, list[tuple[int, int]]]:
        """The structured request for ``doc`` and the entity pairs of its queries, in order."""
        self.require_labels()
        pairs = self.select_pairs(doc)
        return self.request_for(doc, pairs), pairs

    @abstractmethod
    def relations_from_answers(self, doc: Doc, pairs: list[tuple[int, int]],
                               answers: list[Answer], stats: ParseStats) -> list[Relation]:
        """Relations from the decoded answers to ``pairs`` (names with the LLM's
        probabilities); counts what happened in ``stats``."""

    @abstractmethod
    def training_request(self, doc: Doc, rng: random.Random | None = None
                         ) -> tuple[RelationRequest, list[list[str]]]:
        """A gold Doc's request and the target answer names of each of its queries."""

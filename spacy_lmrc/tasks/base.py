"""The task interface shared by document-level (LMRC) and sentence-level (RAG4RE) tasks.

A task speaks in structured requests only: per Doc one
:class:`~spacy_lmrc.llm.requests.RelationRequest` (the text once as a shared prefix, one query
per entity pair, the relation names as the answer space), and relations from the
:data:`~spacy_lmrc.llm.requests.Answer` of each query. How a request reaches a model (rendered
in the task's prompt format and decoded under constraint, or as text prompts for text-only
models) is the backend's business.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from spacy.tokens import Doc

from ..doc import Relation
from ..errors import InputError
from ..llm.formats import PromptFormat
from ..llm.parsing import ParseStats
from ..llm.requests import Answer, RelationRequest

__all__ = ["ParseStats", "RelationTask"]


class RelationTask(ABC):
    """Turns Docs into relation requests and answers into relations.

    ``labels`` maps a relation label as stored in ``doc._.relations`` (e.g. ``P17``) to the
    name the LLM sees (e.g. ``country``).
    """

    labels: dict[str, str]
    #: how requests are rendered for models whose decoding we control (stored with
    #: fine-tuned weights)
    prompt_format: PromptFormat
    #: the relation-set file when it was missing as the task was built: normal while spaCy
    #: builds a saved pipeline elsewhere (``from_disk`` then restores the set), an error on use
    pending_labels_path: str | None = None
    #: what building training requests drew or dropped (e.g. ``negative_pairs``)
    training_counts: Counter

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

    @abstractmethod
    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace the relation set (label -> name shown to the LLM), as ``initialize`` does."""

    @abstractmethod
    def select_pairs(self, doc: Doc) -> list[tuple[int, int]]:
        """The ordered entity pairs of ``doc`` to classify (the candidates, if set)."""

    @abstractmethod
    def request_for(self, doc: Doc, pairs: list[tuple[int, int]]) -> RelationRequest:
        """The request asking about ``pairs`` of ``doc``, one query per pair, in order."""

    def build_request(self, doc: Doc) -> tuple[RelationRequest, list[tuple[int, int]]]:
        """The request for ``doc`` and the entity pairs of its queries, in order."""
        self.require_labels()
        pairs = self.select_pairs(doc)
        return self.request_for(doc, pairs), pairs

    @abstractmethod
    def relations_from_answers(self, doc: Doc, pairs: list[tuple[int, int]],
                               answers: list[Answer], stats: ParseStats) -> list[Relation]:
        """Relations from the answers to ``pairs`` (names with the LLM's probabilities, or
        None where a text answer gave none); counts what happened in ``stats``."""

    def prepare_training(self, docs: Iterable[Doc]) -> None:
        """See the whole training corpus before :meth:`training_request` (e.g. the sentence
        task's class balance needs the label counts); fine-tuning calls it once."""
        self.training_counts = Counter()

    @abstractmethod
    def training_request(self, doc: Doc, rng: random.Random | None = None
                         ) -> tuple[RelationRequest, list[list[str]]]:
        """A gold Doc's request and the target answer names of each of its queries."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Everything that shapes requests and answers, as a pipeline or a fine-tuned
        classifier stores it."""

    @abstractmethod
    def set_config(self, settings: dict[str, Any]) -> None:
        """Restore what :meth:`get_config` returned."""

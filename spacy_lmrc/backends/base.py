"""The backend interface: structured requests in, answers out. Backends are registered by
name (``@registry.misc``) for configs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..classifier.model import RCModel
    from ..llm.formats import PromptFormat
    from ..llm.parsing import ParseStats
    from ..llm.requests import Answer, RelationRequest


class LLMBackend(ABC):
    """Answers relation requests: one answer (names with probabilities) per pair query.

    Backends that control decoding (:class:`~spacy_lmrc.backends.hf.HFBackend`) render each
    request in the task's prompt format and constrain the answers to its answer space;
    text-only models go through the one adapter, :class:`~spacy_lmrc.backends.text.TextBackend`.
    """

    @abstractmethod
    def answer(self, requests: Sequence[RelationRequest], prompt_format: PromptFormat,
               stats: ParseStats | None = None) -> list[list[Answer]]:
        """The answers to every query of every request, in order; what reading them did is
        counted in ``stats``."""

    def usage(self) -> dict[str, int]:
        """Running counts of what was sent (prompts, tokens, requests refused)."""
        return {}

    def use_classifier(self, classifier: RCModel) -> None:
        """Run the fine-tuned ``classifier`` folder. Only backends that load local weights
        can (:class:`~spacy_lmrc.backends.hf.HFBackend`); the others refuse."""
        raise InputError(f"{type(self).__name__} cannot run a fine-tuned classifier folder: "
                         "use spacy_lmrc.HFBackend.v1", path=classifier.path, field="model")

    def to_disk(self, path: Path) -> None:
        """Save what a pipeline needs to reload this backend (e.g. a LoRA adapter)."""

    def from_disk(self, path: Path) -> LLMBackend:
        """Load what :meth:`to_disk` saved."""
        return self


class TextModel(ABC):
    """A model that only takes text: one answer string per prompt string (a hosted API, a
    spacy-llm model, a seq2seq model, a script). :class:`~spacy_lmrc.backends.text.TextBackend`
    turns it into an :class:`LLMBackend`."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Answers for ``prompts``, in order, each at most ``max_new_tokens`` new tokens long
        where the model can bound them."""

    def to_disk(self, path: Path) -> None:
        """Save what a pipeline needs to reload this model."""

    def from_disk(self, path: Path) -> TextModel:
        """Load what :meth:`to_disk` saved."""
        return self

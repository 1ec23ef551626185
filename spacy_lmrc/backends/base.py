"""The backend interface: structured requests in, answers out. Backends are registered by
name (``@registry.misc``) for configs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

    def check_trained_for(self, prompt_format: PromptFormat | None = None,
                          task_settings: Mapping[str, Any] | None = None) -> None:
        """Warn when fine-tuned weights were trained with other ``task_settings`` (a task's
        ``get_config()``); refuse weights trained for another ``prompt_format`` or model.
        Backends without fine-tuned weights have nothing to check."""

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

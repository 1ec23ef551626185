"""The backend interface. Backends are registered by name (``@registry.misc``) for configs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..llm.formats import PromptFormat
    from ..llm.requests import Answer, RelationRequest


class LLMBackend(ABC):
    """Generates one answer per prompt. Implementations batch internally as they see fit.

    Backends that control decoding also answer structured requests (``supports_requests``):
    one shared prefix and many pair queries, each answer constrained to the answer space.
    """

    #: whether :class:`StructuredBackend.answer` can be used (text-only backends: False)
    supports_requests: bool = False

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Answers for ``prompts``, in order."""

    def generate_bounded(self, prompts: Sequence[str], max_new_tokens: int | None) -> list[str]:
        """Answers with at most ``max_new_tokens`` new tokens, where the backend can bound them.

        The default ignores the bound; backends that control generation override this.
        """
        return self.generate(prompts)

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


class StructuredBackend(LLMBackend):
    """A backend that controls decoding and so answers structured requests: the prefix once,
    the pair queries together, each answer constrained to its answer space."""

    supports_requests: bool = True

    @abstractmethod
    def answer(self, requests: Sequence[RelationRequest],
               prompt_format: PromptFormat) -> list[list[Answer]]:
        """Constrained answers (names with probabilities) per query of each request."""

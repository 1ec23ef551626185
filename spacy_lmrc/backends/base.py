"""The backend interface. Backends are registered by name (``@registry.misc``) for configs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path


class LLMBackend(ABC):
    """Generates one answer per prompt. Implementations batch internally as they see fit."""

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Answers for ``prompts``, in order."""

    def generate_bounded(self, prompts: Sequence[str], max_new_tokens: int | None) -> list[str]:
        """Answers with at most ``max_new_tokens`` new tokens, where the backend can bound them.

        The default ignores the bound; backends that control generation override this.
        """
        return self.generate(prompts)

    def to_disk(self, path: Path) -> None:
        """Save what a pipeline needs to reload this backend (e.g. a LoRA adapter)."""

    def from_disk(self, path: Path) -> LLMBackend:
        """Load what :meth:`to_disk` saved."""
        return self

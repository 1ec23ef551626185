"""The one adapter for text-only models: structured requests rendered as text, answers parsed.

:class:`TextBackend` holds a :class:`~spacy_lmrc.backends.base.TextModel` (a hosted API through
spacy-llm, a seq2seq model, a script) and a :class:`~spacy_lmrc.llm.text.TextFormat` (the
template and the tolerant parser). The task's structured prompt format is for models whose
decoding we control; a text-only model gets the text format instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..llm.formats import PromptFormat
from ..llm.parsing import ParseStats
from ..llm.requests import Answer, RelationRequest
from ..llm.text import TextFormat, TextPrompt
from .base import LLMBackend, TextModel


class TextBackend(LLMBackend):
    """A text-only ``model`` as a backend: each request becomes the prompts of ``text_format``,
    sent together in one ``generate`` call (their longest answer budget as the bound), and the
    answers are read back by the format's parser.

    Counts ``prompts`` and ``prompt_chars`` in :meth:`usage`.
    """

    def __init__(self, model: TextModel, text_format: TextFormat | None = None) -> None:
        self.model = model
        self.text_format = text_format or TextFormat()
        self._usage: Counter = Counter()

    def answer(self, requests: Sequence[RelationRequest], prompt_format: PromptFormat,
               stats: ParseStats | None = None) -> list[list[Answer]]:
        stats = stats if stats is not None else ParseStats()
        prompts: list[tuple[int, TextPrompt]] = [
            (index, prompt) for index, request in enumerate(requests)
            for prompt in self.text_format.prompts(request)]
        results: list[list[Answer]] = [[[] for _ in request.queries] for request in requests]
        if not prompts:
            return results
        bound = max(prompt.max_new_tokens for _, prompt in prompts)
        replies = self.model.generate([prompt.text for _, prompt in prompts], bound)
        if len(replies) != len(prompts):
            raise RuntimeError(f"the model returned {len(replies)} answers for {len(prompts)} "
                               "prompts")
        for (index, prompt), reply in zip(prompts, replies):
            answers = self.text_format.read(requests[index], prompt, reply, stats)
            for query, answer in zip(prompt.queries, answers):
                results[index][query] = answer
        self._usage["prompts"] += len(prompts)
        self._usage["prompt_chars"] += sum(len(prompt.text) for _, prompt in prompts)
        return results

    def usage(self) -> dict[str, int]:
        return dict(self._usage)

    def to_disk(self, path: Path) -> None:
        """What the model saves (e.g. a script); the format comes from the config."""
        self.model.to_disk(path)

    def from_disk(self, path: Path) -> TextBackend:
        self.model = self.model.from_disk(path)
        return self

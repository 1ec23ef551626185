"""spacy-llm models as backends (LMRC section 5.6 runs hosted GPT models in the RC role).

``spacy_lmrc.SpacyLLMBackend.v1`` wraps any model of spacy-llm's ``llm_models`` registry
(OpenAI, Anthropic, ... or a local one) as a :class:`~spacy_lmrc.backends.base.TextModel`
behind the text adapter, so ``llm_relation_classifier`` can use it in place of the fine-tuned
local model. The other direction, spacy-llm's ``llm`` component running our tasks, is
:mod:`spacy_lmrc.pipeline.spacy_llm_task`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# spacy-llm validates models by typing.Iterable annotations
from typing import Iterable  # noqa: UP035

from spacy.util import registry

from ..llm.text import TextFormat
from .base import TextModel
from .text import TextBackend

PromptExecutor = Callable[[Iterable[Iterable[str]]], Iterable[Iterable[str]]]


class SpacyLLMModel(TextModel):
    """Any spacy-llm model (a callable from prompts per doc to responses per doc)."""

    def __init__(self, model: PromptExecutor) -> None:
        self.model = model

    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """One answer per prompt: each prompt is sent as its own one-prompt shard (spacy-llm
        models bound the answer length by their own settings)."""
        responses = self.model([[prompt] for prompt in prompts])
        return [str(next(iter(r), "")) for r in responses]


@registry.misc("spacy_lmrc.SpacyLLMBackend.v1")
def make_spacy_llm_backend(model: PromptExecutor,
                           text_format: TextFormat | None = None) -> TextBackend:
    """Backend over a spacy-llm model, e.g. ``@llm_models = "spacy.GPT-4.v3"``, sent the prompts
    of ``text_format`` (default: :class:`~spacy_lmrc.llm.text.TextFormat`)."""
    return TextBackend(SpacyLLMModel(model), text_format)

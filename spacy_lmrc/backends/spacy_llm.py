"""spacy-llm interop, both ways (LMRC section 5.6 runs hosted GPT models in the RC role).

* :class:`SpacyLLMBackend` (``spacy_lmrc.SpacyLLMBackend.v1``) wraps any model of spacy-llm's
  ``llm_models`` registry (OpenAI, Anthropic, ... or a local one) as an :class:`LLMBackend`,
  so ``llm_relation_classifier`` can use it in place of the fine-tuned local model.
* :class:`SpacyLLMRelationTask` (``spacy_lmrc.LMRCRelationTask.v1`` in ``llm_tasks``) lets
  spacy-llm's own ``llm`` component run any :class:`~spacy_lmrc.tasks.base.RelationTask`
  (e.g. the LMRC RC task with few-shot examples) and writes ``doc._.relations``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# spacy-llm validates tasks and models by typing.Iterable / typing.Tuple annotations
from typing import Any, Iterable, Tuple  # noqa: UP035

from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry
from spacy_llm.registry import registry as llm_registry

from ..metrics.scorers import score_relations
from ..tasks import document  # noqa: F401  (registers the LMRC tasks used in task configs)
from ..tasks.base import ParseStats, PromptUnit, RelationTask
from .base import LLMBackend

PromptExecutor = Callable[[Iterable[Iterable[str]]], Iterable[Iterable[str]]]


class SpacyLLMBackend(LLMBackend):
    """Any spacy-llm model (a callable from prompts per doc to responses per doc)."""

    def __init__(self, model: PromptExecutor) -> None:
        self.model = model

    def generate(self, prompts: Sequence[str]) -> list[str]:
        responses = self.model([[prompt] for prompt in prompts])
        return [str(next(iter(r), "")) for r in responses]


@registry.misc("spacy_lmrc.SpacyLLMBackend.v1")
def make_spacy_llm_backend(model: PromptExecutor) -> SpacyLLMBackend:
    """Backend over a spacy-llm model, e.g. ``@llm_models = "spacy.GPT-4.v3"``."""
    return SpacyLLMBackend(model)


class SpacyLLMRelationTask:
    """spacy-llm task around a :class:`RelationTask`: one prompt per unit, the Doc as shard.

    Parse statistics accumulate in :attr:`stats` (unparsable lines, out-of-set relations...).
    """

    def __init__(self, task: RelationTask) -> None:
        self.task = task
        self.stats = ParseStats()

    def generate_prompts(
        self, docs: Iterable[Doc], context_length: int | None = None
    ) -> Iterable[Tuple[Iterable[str], Iterable[Doc]]]:  # noqa: UP006
        for doc in docs:
            units = self.task.generate_prompts(doc)
            yield [unit.text for unit in units], [doc] * len(units)

    def parse_responses(
        self, shards: Iterable[Iterable[Doc]], responses: Iterable[Iterable[str]]
    ) -> Iterable[Doc]:
        for doc_shards, doc_responses in zip(shards, responses):
            doc_shards = list(doc_shards)
            answers = [str(r) for r in doc_responses]
            if not doc_shards:
                continue
            doc = doc_shards[0]
            units: list[PromptUnit] = self.task.generate_prompts(doc)
            doc._.relations = self.task.parse_responses(doc, units, answers, self.stats)
            yield doc

    def scorer(self, examples: Iterable[Example]) -> dict[str, Any]:
        return score_relations(examples)


@llm_registry.llm_tasks("spacy_lmrc.LMRCRelationTask.v1")
def make_spacy_llm_relation_task(task: RelationTask) -> SpacyLLMRelationTask:
    """A spacy-llm task running a spacy-lmrc RelationTask (``task``, e.g. LMRCTask.v1)."""
    return SpacyLLMRelationTask(task)

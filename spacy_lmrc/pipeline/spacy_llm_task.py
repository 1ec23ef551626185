"""spacy-llm's ``llm`` component running a spacy-lmrc task (``spacy_lmrc.LMRCRelationTask.v1``).

:class:`SpacyLLMRelationTask` lets spacy-llm's own ``llm`` component run any
:class:`~spacy_lmrc.tasks.base.RelationTask` (e.g. the LMRC RC task with few-shot examples) and
write ``doc._.relations``; spacy-llm then owns the model, caching and prompt logging. The other
direction, a spacy-llm model behind ``llm_relation_classifier``, is
:mod:`spacy_lmrc.backends.spacy_llm`.
"""

from __future__ import annotations

# spacy-llm validates tasks by typing.Iterable / typing.Tuple annotations
from typing import Any, Iterable, Tuple  # noqa: UP035

from spacy.tokens import Doc
from spacy.training import Example
from spacy_llm.registry import registry as llm_registry

from ..metrics.scorers import score_relations
from ..tasks import document  # noqa: F401  (registers the LMRC tasks used in task configs)
from ..tasks.base import ParseStats, PromptUnit, RelationTask


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
        """The task's prompts for each Doc, with the Doc as the shard of each.

        ``context_length`` is part of spacy-llm's task protocol and not used: the task already
        splits a document's pairs into prompts of k pairs, and a string cannot be measured in
        the model's tokens here.
        """
        for doc in docs:
            units = self.task.generate_prompts(doc)
            yield [unit.text for unit in units], [doc] * len(units)

    def parse_responses(
        self, shards: Iterable[Iterable[Doc]], responses: Iterable[Iterable[str]]
    ) -> Iterable[Doc]:
        """Each Doc with ``doc._.relations`` read from the answers to its prompts."""
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
        """DocRED-style scores of ``doc._.relations`` (``nlp.evaluate``)."""
        return score_relations(examples)


@llm_registry.llm_tasks("spacy_lmrc.LMRCRelationTask.v1")
def make_spacy_llm_relation_task(task: RelationTask) -> SpacyLLMRelationTask:
    """A spacy-llm task running a spacy-lmrc RelationTask (``task``, e.g. LMRCTask.v1)."""
    return SpacyLLMRelationTask(task)

"""spacy-llm's ``llm`` component running a spacy-lmrc task (``spacy_lmrc.LMRCRelationTask.v1``).

:class:`SpacyLLMRelationTask` lets spacy-llm's own ``llm`` component run any
:class:`~spacy_lmrc.tasks.base.RelationTask` (e.g. the LMRC RC task, with few-shot examples in
its text format) and write ``doc._.relations``; spacy-llm then owns the model, caching and
prompt logging. The other direction, a spacy-llm model behind ``llm_relation_classifier``, is
:mod:`spacy_lmrc.backends.spacy_llm`.

Prompts fit the model's context: spacy-llm passes the model's ``context_length`` (in tokens),
and a prompt too long for it is split into prompts of fewer pairs. The document text cannot be
cut (a relation may need any of its sentences), so a prompt for one pair that is still too long
is not sent; it is counted instead (``over_context`` prompts, ``over_context_pairs`` pairs in
:attr:`SpacyLLMRelationTask.stats`) and its pair gets no relation.
"""

from __future__ import annotations

# spacy-llm validates tasks by typing.Iterable / typing.Tuple annotations
from typing import Any, Iterable, Tuple  # noqa: UP035

from spacy.tokens import Doc
from spacy.training import Example
from spacy_llm.registry import registry as llm_registry
from spacy_llm.tasks.util.sharding import make_n_token_estimator

from ..llm.requests import Answer, RelationRequest
from ..llm.text import TextFormat, TextPrompt
from ..metrics.scorers import score_relations
from ..tasks.base import ParseStats, RelationTask

#: prompt length x this must fit the context: spacy-llm's own margin for its token estimate
#: (``spacy.ShardMapper.v1``'s ``buffer_frac``)
CONTEXT_MARGIN = 1.1


class SpacyLLMRelationTask:
    """spacy-llm task around a :class:`RelationTask`: each Doc's request as the prompts of a
    :class:`~spacy_lmrc.llm.text.TextFormat`, the Doc as the shard of each.

    Parse statistics accumulate in :attr:`stats` (unparsable lines, out-of-set relations,
    prompts over the model's context...). Prompt length is estimated as spacy-llm does
    (``spacy.NTokenEstimator.v1``: whitespace-separated words).
    """

    def __init__(self, task: RelationTask, text_format: TextFormat | None = None) -> None:
        self.task = task
        self.text_format = text_format or TextFormat()
        self.stats = ParseStats()
        self.count_tokens = make_n_token_estimator()
        #: the model's context length as the last :meth:`generate_prompts` call received it
        self.context_length: int | None = None

    def generate_prompts(
        self, docs: Iterable[Doc], context_length: int | None = None
    ) -> Iterable[Tuple[Iterable[str], Iterable[Doc]]]:  # noqa: UP006
        """The prompts of each Doc's request, with the Doc as the shard of each; with a
        ``context_length`` (tokens), each prompt fits it (see the module docstring)."""
        self.context_length = context_length
        for doc in docs:
            request, _ = self.task.build_request(doc)
            prompts = self._fitted_prompts(doc, request, count=True)
            yield [prompt.text for prompt in prompts], [doc] * len(prompts)

    def parse_responses(
        self, shards: Iterable[Iterable[Doc]], responses: Iterable[Iterable[str]]
    ) -> Iterable[Doc]:
        """Each Doc with ``doc._.relations`` read from the answers to its prompts."""
        for doc_shards, doc_responses in zip(shards, responses):
            doc_shards = list(doc_shards)
            replies = [str(r) for r in doc_responses]
            if not doc_shards:
                continue
            doc = doc_shards[0]
            request, pairs = self.task.build_request(doc)
            answers: list[Answer] = [[] for _ in request.queries]
            for prompt, reply in zip(self._fitted_prompts(doc, request, count=False), replies):
                read = self.text_format.read(request, prompt, reply, self.stats)
                for query, answer in zip(prompt.queries, read):
                    answers[query] = answer
            doc._.relations = self.task.relations_from_answers(doc, pairs, answers, self.stats)
            yield doc

    def scorer(self, examples: Iterable[Example]) -> dict[str, Any]:
        """DocRED-style scores of ``doc._.relations`` (``nlp.evaluate``)."""
        return score_relations(examples)

    def _fitted_prompts(self, doc: Doc, request: RelationRequest, *,
                        count: bool) -> list[TextPrompt]:
        """The prompts of ``request``, each within :attr:`context_length` (the same ones for
        the same Doc, so answers are read against the prompts that were sent); ``count``
        records prompts left out in :attr:`stats`."""
        prompts = self.text_format.prompts(request)
        if self.context_length is None:
            return prompts
        return [fitted for prompt in prompts
                for fitted in self._fit(doc, request, prompt, count)]

    def _fit(self, doc: Doc, request: RelationRequest, prompt: TextPrompt,
             count: bool) -> list[TextPrompt]:
        """``prompt`` if it fits the context, else its queries in halves, recursively; a
        one-pair prompt that does not fit is left out."""
        if self.count_tokens(prompt.text) * CONTEXT_MARGIN <= self.context_length:
            return [prompt]
        if len(prompt.queries) <= 1:
            if count:
                self.stats.add("over_context")
                self.stats.add("over_context_pairs", len(prompt.queries))
                pairs = [(request.queries[i].head_id, request.queries[i].tail_id)
                         for i in prompt.queries]
                self.stats.sample("over_context", f"{doc._.title}: {pairs}")
            return []
        half = len(prompt.queries) // 2
        return [fitted for queries in (prompt.queries[:half], prompt.queries[half:])
                for part in self.text_format.prompts_for(request, queries)
                for fitted in self._fit(doc, request, part, count)]


@llm_registry.llm_tasks("spacy_lmrc.LMRCRelationTask.v1")
def make_spacy_llm_relation_task(task: RelationTask,
                                 text_format: TextFormat | None = None) -> SpacyLLMRelationTask:
    """A spacy-llm task running a spacy-lmrc RelationTask (``task``, e.g. LMRCTask.v1) with the
    prompts of ``text_format`` (default: :class:`~spacy_lmrc.llm.text.TextFormat`)."""
    return SpacyLLMRelationTask(task, text_format)

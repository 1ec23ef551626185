"""Sentence-level relation classification (RAG4RE): one label per entity pair of a sentence.

A sentence becomes one structured request: the sentence (and, with ``use_examples``, the
retrieved example sentence(s) of ``doc._.rag_examples``, which the ``rag4re_retriever`` writes)
as the shared prefix, one ``head | tail =>`` query per pair, and the label display names as the
answer space, one label per pair (the negative label, ``Other`` / ``no_relation``, is an
ordinary answer). Local models decode under a constraint to that space, so every answer is a
label, and a relation's ``score`` is the LLM's probability of its label. Text-only models get
RAG4RE's prompts (``rag4re`` with the examples, else ``simple_query``; the example's label is
not shown, as in RAG4RE) and the tolerant label parser (:mod:`spacy_lmrc.llm.text`).

Labels are shown to the LLM exactly as the corpus spells them (SemEval's
``Cause-Effect(e1,e2)``, TACRED's ``per:city_of_birth``) unless ``label_names`` maps them to
other display names; the prompt names the head entity ``e1`` and the tail ``e2``, so SemEval's
direction suffixes read naturally. The prompt format is ``spacy_lmrc.SentenceFormat.v1``
(by default without the label list: fine-tuned models learn the set; ``show_relations`` lists it
for prompt-only models).
Fine-tuning uses the same requests with the gold label per pair
(:meth:`SentenceRETask.training_request`); ``negative_ratio`` caps the training pairs with the
negative label at a multiple of the mean positive label count, so the model does not learn to
answer ``Other`` / ``no_relation`` everywhere.

The LLM gives every label of at least ``label_floor`` probability (1%) and the answer is the
most probable: greedy decoding (``label_floor = null``) follows the likeliest token at each
branch of the label trie (the relation first, then its direction) and may end on a less
probable label. With ``vote_weight`` the retrieved examples' labels also vote: the answer is
the label of the best product of the LLM's probability and the examples' smoothed share
(:mod:`.vote`); ``shown_examples`` keeps the prompt to the first examples while all k vote.

Laid out as spacy-llm lays out its tasks: :mod:`.task` (requests), :mod:`.parser` (answers to
relations), :mod:`.vote` (the examples' vote) and :mod:`.registry`
(``spacy_lmrc.SentenceRETask.v3``; ``.v2`` and ``.v1``, configs written before ``label_floor``,
decode the greedy label unless they vote).
"""

from .parser import relations_from_answers
from .registry import DEFAULT_NEGATIVE_RATIO, make_sentence_task
from .task import DEFAULT_LABEL_FLOOR, SentenceRETask
from .vote import fuse_answer, vote_distribution

__all__ = ["DEFAULT_LABEL_FLOOR", "DEFAULT_NEGATIVE_RATIO", "SentenceRETask", "fuse_answer",
           "make_sentence_task", "relations_from_answers", "vote_distribution"]

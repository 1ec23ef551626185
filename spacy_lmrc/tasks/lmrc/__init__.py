"""LMRC's document-level tasks: relation classification (RC) and the LLM-only baseline.

* **RC** (``spacy_lmrc.LMRCTask.v1``, LMRC section 4.2): the pairs are the candidate
  proposer's ``doc._.relation_candidates`` (with ``pair_source = "auto"``, every ordered pair
  for a Doc that has none). The RC may answer ``None`` (``allow_none``), because two of three
  candidates hold no relation; its fine-tuning data then holds the gold pairs with relations
  and, as negatives, the proposer's highest-scored candidates without relation
  (``negative_source = "candidates"``: the pairs it meets at inference); with
  ``allow_none = false`` it must name a relation for every candidate and trains on gold pairs
  with relations only.
* **Baseline** (``spacy_lmrc.LMRCBaselineTask.v2``, LMRC section 3.2): every ordered pair, and
  the model answers ``None`` for pairs without relation; fine-tuning data holds all pairs. Its
  relations are scored and thresholded by the same fusion as RC's (without a proposer: the
  LLM's probabilities of the relation and of ``None``), tuned on dev the same way.

A Doc becomes one structured request (:meth:`LMRCTask.build_request`): the document once as a
shared prefix, one query per pair, and the relation names as the answer space, rendered by the
task's prompt format (``compact`` by default, LMRC appendix A's ``paper`` format on request)
for local models, and as LMRC appendix A's text prompts
(:mod:`spacy_lmrc.llm.text`) for text-only ones. Entities are named by
``doc._.entities[i]["name"]``, unique within a document. A relation's ``score`` is fused with
the proposer's P(pair related) and the LLM's P(None) by the task's ``fusion``
(:mod:`spacy_lmrc.fusion`), which also holds the least score kept; a relation read from a text
answer (no probability) scores the proposer's P(pair) when the pair came from
``doc._.relation_candidates``, else 1.0.

A document longer than the LLM's context is asked over windows of its sentences, each pair
over its mention sentences and their neighbours (:mod:`.windows`); one that fits is sent whole.

The package is laid out as spacy-llm lays out its tasks: :mod:`.task` (requests),
:mod:`.parser` (answers to relations), :mod:`.windows` (documents longer than the context)
and :mod:`.registry` (the registered factories).
"""

from .parser import NONE_NAME, relations_from_answers
from .registry import make_lmrc_baseline_task, make_lmrc_task
from .task import NEGATIVE_SOURCES, PAIR_SOURCES, LMRCTask

__all__ = ["NEGATIVE_SOURCES", "NONE_NAME", "PAIR_SOURCES", "LMRCTask",
           "make_lmrc_baseline_task", "make_lmrc_task", "relations_from_answers"]

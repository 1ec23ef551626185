"""LLM tasks: how a Doc becomes a structured relation request and how answers become
``doc._.relations``.

As in spacy-llm, a task is kept apart from the component that runs it and from the LLM backend
that answers it, and each task is a package of its own (``task``, ``parser``, ``registry``):
:mod:`.lmrc` (document level: LMRC's RC and the LLM-only baseline) and :mod:`.sentence`
(sentence level: RAG4RE). Configs name them ``spacy_lmrc.<Name>.v1`` (registered through the
package's entry points).
"""

from .base import ParseStats, RelationTask

__all__ = ["ParseStats", "RelationTask"]

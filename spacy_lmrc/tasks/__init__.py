"""LLM tasks: how a Doc becomes a structured relation request and how answers become
``doc._.relations``.

As in spacy-llm, a task is kept apart from the component that runs it and from the LLM backend
that answers it. Tasks are registered by name (``spacy_lmrc.<Name>.v1``) so configs can swap
them.
"""

from . import sentence  # noqa: F401  (registers spacy_lmrc.SentenceRETask.v1)
from .base import ParseStats, RelationTask

__all__ = ["ParseStats", "RelationTask"]

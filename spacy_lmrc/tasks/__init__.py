"""LLM tasks: how a Doc becomes prompts and how answers become ``doc._.relations``.

As in spacy-llm, a task keeps its prompt template and its answer parser apart from the
component that runs it and from the LLM backend that answers it. Tasks are registered by name
(``@registry.misc("spacy_lmrc.<Name>.v1")``) so configs can swap them.
"""

from . import sentence  # noqa: F401  (registers spacy_lmrc.SentenceRETask.v1)
from .base import ParseStats, PromptUnit, RelationTask

__all__ = ["ParseStats", "PromptUnit", "RelationTask"]

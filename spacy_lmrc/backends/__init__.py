"""LLM backends: anything that answers relation requests (structured, or through the text
adapter for text-only models)."""

from .base import LLMBackend, TextModel
from .openai import OpenAIBackend
from .text import TextBackend

__all__ = ["LLMBackend", "OpenAIBackend", "TextBackend", "TextModel"]

"""LLM backends: anything that turns a batch of prompt strings into answer strings."""

from .base import LLMBackend

__all__ = ["LLMBackend"]

"""A model that returns given answers: for tests and for replaying recorded LLM output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import srsly
from spacy.util import registry

from ..llm.text import TextFormat
from .base import TextModel
from .text import TextBackend


class ScriptedModel(TextModel):
    """Answers from a script, checked in this order for every prompt:

    1. ``rules``: the answer of the first key that occurs in the prompt;
    2. ``answers``: the next unused answer of the list;
    3. ``default``.

    Every prompt is kept in ``prompts`` so tests can inspect what was sent.
    """

    def __init__(self, answers: Sequence[str] = (), rules: dict[str, str] | None = None,
                 default: str = "") -> None:
        self.answers = list(answers)
        self.rules = dict(rules or {})
        self.default = default
        self.prompts: list[str] = []
        self._next = 0

    def _answer(self, prompt: str) -> str:
        for key, answer in self.rules.items():
            if key in prompt:
                return answer
        if self._next < len(self.answers):
            self._next += 1
            return self.answers[self._next - 1]
        return self.default

    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        self.prompts += list(prompts)
        return [self._answer(p) for p in prompts]

    def to_disk(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "script.json", {"answers": self.answers, "rules": self.rules,
                                                "default": self.default})

    def from_disk(self, path: Path) -> ScriptedModel:
        script = srsly.read_json(Path(path) / "script.json")
        self.answers, self.rules = script["answers"], script["rules"]
        self.default, self._next = script["default"], 0
        return self


@registry.misc("spacy_lmrc.ScriptedBackend.v1")
def make_scripted_backend(answers: list[str] | None = None, rules: dict[str, str] | None = None,
                          default: str = "", text_format: TextFormat | None = None
                          ) -> TextBackend:
    """Scripted answers (rules by prompt substring, then a list in order, then a default) to
    the prompts of ``text_format`` (default: :class:`~spacy_lmrc.llm.text.TextFormat`)."""
    return TextBackend(ScriptedModel(answers or [], rules, default), text_format)

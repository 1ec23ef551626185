"""The files a text format reads: its prompt template and few-shot examples.

Each loader checks its file and raises an :class:`~spacy_lmrc.errors.InputError` that names it,
so a bad path or shape is reported where it was given, not deep inside prompt rendering.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import srsly
from jinja2 import Environment, StrictUndefined, Template, meta

from ..errors import InputError

#: templates shipped with the package that a config may name instead of giving a path
NAMED_TEMPLATES = {
    "lmrc_rc": "lmrc_rc.jinja",
    "lmrc_baseline": "lmrc_baseline.jinja",
    "simple_query": "rag4re_simple_query.jinja",
    "rag4re": "rag4re_rag.jinja",
}


def load_template(template: str | Path) -> str:
    """The template text: a packaged template by name (:data:`NAMED_TEMPLATES`) or a user
    file."""
    if str(template) in NAMED_TEMPLATES:
        return _packaged(NAMED_TEMPLATES[str(template)])
    path = Path(template)
    if not path.exists():
        raise InputError(f"prompt template not found: use one of {sorted(NAMED_TEMPLATES)} "
                         f"or the path of a Jinja2 file", path=path)
    return path.read_text(encoding="utf8")


@lru_cache(maxsize=16)
def compile_template(template: str) -> tuple[Template, frozenset[str]]:
    """A template name or file (as :func:`load_template` reads it), compiled, and the
    variables it reads. Undefined variables raise (``StrictUndefined``), so no placeholder
    is ever sent unfilled."""
    env = Environment(undefined=StrictUndefined, autoescape=False)
    text = load_template(template)
    variables = frozenset(meta.find_undeclared_variables(env.parse(text)))
    return env.from_string(text), variables


def _packaged(name: str) -> str:
    return resources.files("spacy_lmrc").joinpath("templates", name).read_text(encoding="utf8")


def load_examples(path: str | Path | None) -> list[dict[str, Any]]:
    """Few-shot examples from JSON / JSONL: ``{"text", "pairs": [[head, tail], ...], "answer"}``."""
    if not path:
        return []
    path = Path(path)
    if not path.exists():
        raise InputError("few-shot examples file not found", path=path)
    records = list(srsly.read_jsonl(path)) if path.suffix == ".jsonl" else srsly.read_json(path)
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not {"text", "pairs", "answer"} <= set(record):
            raise InputError("expected an object with text, pairs and answer", path=path,
                             index=i, field="text/pairs/answer")
    return records

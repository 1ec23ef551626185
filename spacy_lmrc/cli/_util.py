"""Shared CLI plumbing: readable errors instead of tracebacks, and document loading."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc

from ..corpus import read_docred, read_sentence_corpus
from ..corpus.io import load_json_records
from ..corpus.readers import read_docbin
from ..errors import InputError, SkipReport

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Print input errors as one actionable line and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (InputError, FileNotFoundError) as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def info(message: str) -> None:
    """Progress and provenance go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr)


def detect_format(path: Path) -> str:
    """``spacy`` for DocBin files, else ``docred``, ``tacred`` or ``semeval`` by content."""
    if path.suffix == ".spacy":
        return "spacy"
    records = load_json_records(path)
    first = records[0] if records else {}
    if isinstance(first, dict) and "vertexSet" in first:
        return "docred"
    if isinstance(first, dict) and "token" in first:
        return "tacred"
    return "semeval"


def load_docs(
    path: Path,
    nlp: Language | None = None,
    *,
    fmt: str = "auto",
    first: int | None = None,
    last: int | None = None,
    skip_invalid: bool = False,
    relations_path: Path | None = None,
    label_names_path: Path | None = None,
) -> tuple[list[Doc], SkipReport]:
    """Docs from any supported file, and the report of skipped documents."""
    nlp = nlp or spacy.blank("en")
    fmt = detect_format(path) if fmt == "auto" else fmt
    report = SkipReport()
    if fmt == "spacy":
        docs = read_docbin(path, nlp, first=first, last=last)
    elif fmt == "docred":
        docs = list(read_docred(path, nlp.vocab, first=first, last=last,
                                skip_invalid=skip_invalid, report=report))
    elif fmt in ("semeval", "tacred"):
        docs = list(read_sentence_corpus(path, nlp, relations_path=relations_path,
                                         label_names_path=label_names_path, first=first,
                                         last=last, skip_invalid=skip_invalid, report=report))
    else:
        raise InputError(f"unknown format {fmt!r} (expected auto, spacy, docred, semeval, tacred)",
                         path=path)
    if len(report):
        info(report.summary())
    return docs, report


def describe_slice(path: Path, first: int | None, last: int | None) -> str:
    parts = [str(path)]
    if first is not None:
        parts.append(f"first {first}")
    if last is not None:
        parts.append(f"last {last}")
    return ", ".join(parts)

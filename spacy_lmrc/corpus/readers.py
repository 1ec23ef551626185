"""Registered corpus readers, so configs can name them (``@readers = "spacy_lmrc...."``).

They yield :class:`spacy.training.Example` objects whose predicted Doc keeps the reference's
tokens, sentences, title and entities but none of its relations: the components then predict
from exactly the input a user would give them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from ..errors import InputError
from .docred import read_docred
from .io import select_records
from .sentence import read_sentence_corpus


def input_copy(reference: Doc) -> Doc:
    """A copy of ``reference`` without gold or predicted relation annotations."""
    doc = reference.copy()
    doc._.relations = []
    doc._.relation_candidates = []
    doc._.rag_examples = []
    return doc


def to_examples(docs: Iterable[Doc]) -> Iterator[Example]:
    for doc in docs:
        yield Example(input_copy(doc), doc)


def read_docbin(path: str | Path, nlp: Language, *, first: int | None = None,
                last: int | None = None) -> list[Doc]:
    """Docs of a ``.spacy`` file written by ``spacy-lmrc convert``."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    try:
        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    except (ValueError, KeyError) as err:
        raise InputError(f"not a readable DocBin (.spacy) file: {err}", path=path) from None
    return [doc for _, doc in select_records(docs, first=first, last=last)]


@registry.readers("spacy_lmrc.DocRedCorpus.v1")
def create_docred_corpus(
    path: Path, first: int | None = None, last: int | None = None,
    skip_invalid: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """DocRED / Re-DocRED JSON; ``first`` / ``last`` cut the redocred-small split."""

    def reader(nlp: Language) -> Iterator[Example]:
        docs = read_docred(path, nlp.vocab, first=first, last=last, skip_invalid=skip_invalid)
        yield from to_examples(docs)

    return reader


@registry.readers("spacy_lmrc.SentenceCorpus.v1")
def create_sentence_corpus(
    path: Path, relations_path: Path | None = None, label_names_path: Path | None = None,
    first: int | None = None, last: int | None = None, negative_label: str | None = None,
    skip_invalid: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """SemEval-2010 Task 8 or TACRED, as one-pair Docs."""

    def reader(nlp: Language) -> Iterator[Example]:
        docs = read_sentence_corpus(
            path, nlp, relations_path=relations_path, label_names_path=label_names_path,
            first=first, last=last, negative_label=negative_label, skip_invalid=skip_invalid,
        )
        yield from to_examples(docs)

    return reader


@registry.readers("spacy_lmrc.DocBinCorpus.v1")
def create_docbin_corpus(
    path: Path, first: int | None = None, last: int | None = None,
) -> Callable[[Language], Iterator[Example]]:
    """A ``.spacy`` file from ``spacy-lmrc convert``; keeps the given tokenization."""

    def reader(nlp: Language) -> Iterator[Example]:
        yield from to_examples(read_docbin(path, nlp, first=first, last=last))

    return reader

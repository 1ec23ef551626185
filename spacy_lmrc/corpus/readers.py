"""Registered corpus readers, so configs can name them (``@readers = "spacy_lmrc...."``).

They yield :class:`spacy.training.Example` objects whose predicted Doc keeps the reference's
tokens, sentences, title and entities but none of its relations: the components then predict
from exactly the input a user would give them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry
from tqdm import tqdm

from ..errors import InputError, SkipReport
from .docred import read_docred, report_warnings
from .io import TitleCheck, select_records, warn_unreported
from .sentence import read_sentence_corpus


def input_copy(reference: Doc) -> Doc:
    """A copy of ``reference`` without gold or predicted relation annotations."""
    doc = reference.copy()
    doc._.relations = []
    doc._.relation_candidates = []
    doc._.rag_examples = []
    return doc


def to_examples(docs: Iterable[Doc]) -> Iterator[Example]:
    """(input copy, reference) Examples of reference Docs."""
    for doc in docs:
        yield Example(input_copy(doc), doc)


def read_docbin(path: str | Path, nlp: Language, *, first: int | None = None,
                last: int | None = None, report: SkipReport | None = None,
                unique_titles: bool = False,
                relation_set: Collection[str] | None = None) -> list[Doc]:
    """Docs of a ``.spacy`` file written by ``spacy-lmrc convert``.

    A repeated title is counted in ``report`` (an error with ``unique_titles``), and so are
    self-relations, relations outside ``relation_set`` and NUL characters.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder; expected a .spacy file", path=path)
    try:
        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    except OSError as err:
        raise InputError(f"cannot read the file: {err.strerror or err}", path=path) from None
    except Exception as err:  # corrupt bytes fail anywhere in zlib, msgpack or spaCy
        raise InputError(f"not a readable DocBin (.spacy) file: {type(err).__name__}: {err}",
                         path=path) from None
    if not docs:
        raise InputError("contains no documents", path=path)
    owned = report is None
    report = SkipReport() if report is None else report
    titles = TitleCheck(path, report, strict=unique_titles)
    selected = select_records(docs, first=first, last=last)
    for index, doc in selected:
        titles(doc._.title, index)
        report_warnings(doc, report, relation_set=relation_set, path=path, index=index)
    warn_unreported(report, owned)
    return [doc for _, doc in selected]


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


@registry.readers("spacy_lmrc.ProposedCorpus.v1")
def create_proposed_corpus(
    corpus: Callable[[Language], Iterable[Example]], proposer: Path,
    threshold: float = 0.0, hint_top_m: int = 0, batch_size: int = 8, device: str = "cpu",
) -> Callable[[Language], Iterator[Example]]:
    """``corpus`` with a trained proposer's candidates on every reference Doc.

    The RC's fine-tuning reads its negatives from them (``LMRCTask.v1``'s ``negative_source =
    "candidates"``: the highest-scored pairs without relation are the ones RC meets at
    inference). ``threshold`` 0 keeps every pair with its score, so the task can rank them all
    (a proposer scores its own training documents too well for its dev threshold to leave
    enough); ``hint_top_m`` relation-type hints are stored per pair (set it to the task's
    ``hint_top_m`` when RC trains on hinted answer spaces).
    """

    def reader(nlp: Language) -> Iterator[Example]:
        from ..pipeline import candidate_proposer  # noqa: F401  (registers the factory)

        examples = list(corpus(nlp))
        proposing = spacy.blank(nlp.lang)
        proposing.add_pipe("lmrc_candidate_proposer", config={
            "model": str(proposer), "threshold": threshold, "hint_top_m": hint_top_m,
            "batch_size": batch_size, "device": device})
        references = [eg.reference for eg in examples]
        for _ in proposing.pipe(tqdm(references, desc="proposer candidates", unit="doc"),
                                batch_size=batch_size):
            pass
        yield from examples

    return reader

"""``spacy-lmrc build-index``: the RAG4RE embedding index of a training corpus."""

from __future__ import annotations

import time
from pathlib import Path

import spacy
import typer
from spacy.tokens import Doc

from ..corpus.io import select_records
from ..corpus.readers import read_docbin
from ..corpus.sentence import SEMEVAL_NEGATIVE, TACRED_NEGATIVE
from ..errors import InputError, SkipReport
from ..rag4re.embedder import SentenceEmbedder, representation_for
from ..rag4re.representation import Representation
from ..rag4re.retrieval import META_FILE, EmbeddingIndex
from ..util import DEFAULT_ENCODER
from ._app import app
from ._util import (
    atomic_folder,
    describe_slice,
    detect_format,
    first_option,
    format_option,
    friendly_errors,
    info,
    label_names_option,
    last_option,
    load_docs,
    relations_option,
    skip_invalid_option,
    timed,
)


def sentence_docs(path: Path, first: int | None, last: int | None, skip_invalid: bool,
                  report: SkipReport) -> list[Doc]:
    """The one-pair sentence Docs of a ``.spacy`` file: each must hold exactly 2 entities.

    A document-level Doc would be indexed as one long "sentence" labelled with the relation
    of its entities 0 and 1, so it is an error (or skipped and reported).
    """
    docs = []
    for index, doc in select_records(read_docbin(path, spacy.blank("en"), report=report),
                                     first=first, last=last):
        if len(doc._.entities) == 2:
            docs.append(doc)
            continue
        err = InputError(f"expected a one-pair sentence Doc with 2 entities, got "
                         f"{len(doc._.entities)} (the retriever takes sentence-level corpora)",
                         path=path, index=index, title=doc._.title, field="entities",
                         kind="expected 2 entities")
        if not skip_invalid:
            raise err
        report.add(err)
    if len(report) or report.warnings:
        info(report.summary())
    return docs


def read_training_sentences(
    path: Path, fmt: str, first: int | None, last: int | None, skip_invalid: bool,
    relations: Path | None, label_names: Path | None, negative_label: str | None,
) -> tuple[list[Doc], SkipReport, str]:
    """The one-pair sentence Docs of a SemEval / TACRED JSON or ``.spacy`` file, the report of
    skipped records, and the negative label (given, or the corpus's)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "docred":
        raise InputError("is a DocRED document file; the retriever takes a sentence-level "
                         "corpus (SemEval, TACRED, or a .spacy file of one-pair sentences)",
                         path=path)
    negative = negative_label or (TACRED_NEGATIVE if fmt == "tacred" else SEMEVAL_NEGATIVE)
    if fmt == "spacy":
        report = SkipReport()
        docs = sentence_docs(path, first, last, skip_invalid, report)
    else:
        docs, report = load_docs(path, fmt=fmt, first=first, last=last,
                                 skip_invalid=skip_invalid, relations_path=relations,
                                 label_names_path=label_names)
    if not docs:
        raise InputError("no valid sentence in the selection", path=path)
    return docs, report, negative


def check_representation(value: str | None) -> str | None:
    """Typer callback: a representation spec the retriever knows, or a usage error."""
    if value is not None:
        try:
            Representation.parse(value)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    return value


def index_representation(embedder: str, representation: str | None) -> Representation:
    """:func:`~spacy_lmrc.rag4re.embedder.representation_for`, its refusal as an input error."""
    try:
        return representation_for(embedder, representation)
    except ValueError as err:
        raise InputError(f"{err}; leave --representation out", path=Path(embedder)) from None


@app.command("build-index")
@friendly_errors
@timed
def build_index_cli(
    input_path: Path = typer.Argument(..., help="SemEval or TACRED JSON, or a .spacy file"),
    output_path: Path = typer.Argument(..., help="Index folder to write"),
    embedder: str = typer.Option(
        DEFAULT_ENCODER, "--embedder", help="sentence-transformers model name or local path "
        "(a folder from 'spacy-lmrc train-retriever' is copied into the index)"),
    representation: str | None = typer.Option(
        None, "--representation", callback=check_representation,
        help="What is embedded: sentence, marked, span[:N] or pair (default: the one the "
        "embedder was trained with, else sentence)"),
    batch_size: int = typer.Option(64, "--batch-size", help="Sentences per embedding batch"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    negative_label: str | None = typer.Option(
        None, "--negative-label", help="Label of sentences without relation "
        "(default: Other for SemEval, no_relation for TACRED)"),
    fmt: str = format_option("auto, spacy, semeval or tacred"),
    first: int | None = first_option(what="sentences"),
    last: int | None = last_option(what="sentences"),
    relations: Path | None = relations_option(),
    label_names: Path | None = label_names_option(),
    skip_invalid: bool = skip_invalid_option(),
) -> None:
    """Embed the training sentences (normalised) for rag4re_retriever.

    The index records the embedder (name or bundled folder, and its weights' fingerprint) and
    the representation; the retriever embeds its queries the same way and refuses another
    embedder. SemEval train split used here: --first 7000 (the dev split is the last 1000).
    The index folder is written atomically: a failed run leaves the previous index (or none).
    """
    view = index_representation(embedder, representation)
    with atomic_folder(output_path, marker=META_FILE) as folder:
        docs, report, negative = read_training_sentences(
            input_path, fmt, first, last, skip_invalid, relations, label_names, negative_label)
        start = time.perf_counter()
        index = EmbeddingIndex.build(docs, SentenceEmbedder(embedder, device=device,
                                                            batch_size=batch_size),
                                     view, negative, show_progress=True)
        seconds = time.perf_counter() - start
        index.to_disk(folder)
    info(f"indexed {len(index)} sentences of {describe_slice(input_path, first, last)} "
         f"(skipped {len(report)} invalid) with {embedder} (fingerprint {index.fingerprint}, "
         f"{'bundled, ' if index.bundled else ''}representation {view}) in {seconds:.1f} s "
         f"-> {output_path}")

"""``spacy-lmrc build-index``: the RAG4RE embedding index of a training corpus."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..corpus.sentence import SEMEVAL_NEGATIVE, TACRED_NEGATIVE
from ..retrieval import EmbeddingIndex, SentenceEmbedder, doc_record
from ..util import DEFAULT_ENCODER
from ._app import app
from ._util import describe_slice, detect_format, friendly_errors, info, load_docs


@app.command("build-index")
@friendly_errors
def build_index_cli(
    input_path: Path = typer.Argument(..., help="SemEval or TACRED JSON, or a .spacy file"),
    output_path: Path = typer.Argument(..., help="Index folder to write"),
    embedder: str = typer.Option(DEFAULT_ENCODER, "--embedder",
                                 help="sentence-transformers model name or local path"),
    batch_size: int = typer.Option(64, "--batch-size", help="Sentences per embedding batch"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    negative_label: str | None = typer.Option(
        None, "--negative-label", help="Label of sentences without relation "
        "(default: Other for SemEval, no_relation for TACRED)"),
    fmt: str = typer.Option("auto", "--format", help="auto, spacy, semeval or tacred"),
    first: int | None = typer.Option(None, "--first", help="Only the first N sentences"),
    last: int | None = typer.Option(None, "--last", help="Then only the last N sentences"),
    relations: Path | None = typer.Option(None, "--relations", help="SemEval labels file"),
    label_names: Path | None = typer.Option(None, "--label-names",
                                            help="SemEval label names (relations.json)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count bad records"),
) -> None:
    """Embed the training sentences (markup stripped, normalised) for rag4re_retriever.

    SemEval train split used here: --first 7000 (the dev split is the last 1000).
    """
    fmt = detect_format(input_path) if fmt == "auto" else fmt
    negative = negative_label or (TACRED_NEGATIVE if fmt == "tacred" else SEMEVAL_NEGATIVE)
    docs, report = load_docs(input_path, fmt=fmt, first=first, last=last,
                             skip_invalid=skip_invalid, relations_path=relations,
                             label_names_path=label_names)
    records = [doc_record(doc, negative) for doc in docs]
    kept = [r for r in records if r is not None]
    if len(kept) < len(records):
        info(f"skipped {len(records) - len(kept)} documents with fewer than two entities")
    if not kept:
        raise typer.BadParameter(f"no sentence with two entities in {input_path}")
    start = time.perf_counter()
    index = EmbeddingIndex.build(kept, SentenceEmbedder(embedder, device=device,
                                                        batch_size=batch_size),
                                 show_progress=True)
    seconds = time.perf_counter() - start
    index.to_disk(output_path)
    info(f"indexed {len(index)} sentences of {describe_slice(input_path, first, last)} "
         f"(skipped {len(report)} invalid) with {embedder} in {seconds:.1f} s "
         f"-> {output_path}")

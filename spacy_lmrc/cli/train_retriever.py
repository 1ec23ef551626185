"""``spacy-lmrc train-retriever``: fine-tune the RAG4RE retriever's embedder on labelled data."""

from __future__ import annotations

from pathlib import Path

import typer

from ..rag4re.embedder import TRAINING_FILE
from ..rag4re.training import LOSSES, EmbedderSettings, train_embedder
from ..util import DEFAULT_ENCODER
from ._app import app
from ._util import (
    atomic_folder,
    count_or_null,
    describe_slice,
    first_option,
    format_option,
    friendly_errors,
    info,
    label_names_option,
    last_option,
    relations_option,
    skip_invalid_option,
    timed,
)
from .build_index import check_representation, read_training_sentences


def check_loss(value: str) -> str:
    """Typer callback: one of the supported losses, or a usage error."""
    if value not in LOSSES:
        raise typer.BadParameter(f"expected one of {', '.join(LOSSES)}")
    return value


@app.command("train-retriever")
@friendly_errors
@timed
def train_retriever_cli(
    input_path: Path = typer.Argument(..., help="SemEval or TACRED JSON, or a .spacy file"),
    output_path: Path = typer.Argument(..., help="Folder for the fine-tuned embedder"),
    base_model: str = typer.Option(DEFAULT_ENCODER, "--base-model",
                                   help="sentence-transformers model name or local path"),
    representation: str = typer.Option(
        "marked", "--representation", callback=check_representation,
        help="What is embedded: sentence, marked, span[:N] or pair"),
    loss: str = typer.Option(EmbedderSettings.loss, "--loss", callback=check_loss,
                             help=f"Batch loss over the labels: {', '.join(LOSSES)}"),
    temperature: float = typer.Option(
        EmbedderSettings.temperature, "--temperature",
        help="Softmax temperature of the supervised_contrastive loss"),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the training sentences"),
    max_steps: int | None = typer.Option(None, "--max-steps", parser=count_or_null,
                                         help="Stop after this many optimiser steps"),
    batch_size: int = typer.Option(64, "--batch-size",
                                   help="Sentences per step (even, at least 4)"),
    learning_rate: float = typer.Option(1e-4, "--learning-rate", help="AdamW learning rate"),
    warmup_ratio: float = typer.Option(0.1, "--warmup-ratio",
                                       help="Share of the steps with a linear warmup"),
    seed: int = typer.Option(0, "--seed", help="Seed of the batches and the initialisation"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    pooling: str = typer.Option(
        EmbedderSettings.pooling, "--pooling",
        help="Sentence vector: mean (the model's own pooling) or entity_start (the hidden "
             "states at <e1> and <e2>; needs marked, span or pair)"),
    folds: int = typer.Option(1, "--folds", min=1,
                              help="Folds the sentences are split into by their text (with "
                                   "--held-out-fold)"),
    held_out_fold: int | None = typer.Option(
        None, "--held-out-fold", parser=count_or_null,
        help="Train without this fold's sentences: a cross-fitted retriever for the "
             "generator's training prompts (RetrievedSentenceCorpus.v2)"),
    negative_label: str | None = typer.Option(
        None, "--negative-label", help="Label of sentences without relation, a class of its "
        "own (default: Other for SemEval, no_relation for TACRED)"),
    fmt: str = format_option("auto, spacy, semeval or tacred"),
    first: int | None = first_option(what="sentences"),
    last: int | None = last_option(what="sentences"),
    relations: Path | None = relations_option(),
    label_names: Path | None = label_names_option(),
    skip_invalid: bool = skip_invalid_option(),
) -> None:
    """Fine-tune a sentence-transformers embedder so that a sentence's nearest training
    sentences hold the same relation (labels as classes, a supervised contrastive or batch
    triplet loss, label-grouped batches; sentence-transformers' own trainer).

    Use only the training split (SemEval here: --first 7000). Then
    ``spacy-lmrc build-index ... --embedder OUTPUT`` embeds the index with it, in the
    representation it was trained on, and bundles it with the index. The folder is written
    atomically.

    Cross-fitting (``--folds K --held-out-fold i``, once for each i): K retrievers, each
    trained without one fold of the sentences, whose indexes build the training prompts of
    ``spacy_lmrc.RetrievedSentenceCorpus.v2``, so that each training sentence's example comes
    from a retriever that never saw it, as at inference.
    """
    settings = EmbedderSettings(
        base_model=base_model, representation=representation, loss=loss, temperature=temperature,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
        warmup_ratio=warmup_ratio, seed=seed, device=device, pooling=pooling, folds=folds,
        held_out_fold=held_out_fold)
    try:
        settings.check()
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    with atomic_folder(output_path, marker=TRAINING_FILE) as folder:
        docs, report, negative = read_training_sentences(
            input_path, fmt, first, last, skip_invalid, relations, label_names, negative_label)
        source = describe_slice(input_path, first, last)
        info(f"training the embedder {base_model} on {len(docs)} sentences of {source} "
             f"(skipped {len(report)} invalid), representation {representation}, loss {loss}")
        summary = train_embedder(docs, folder, settings, negative, source=source)
    left_out = summary["labels_left_out"]
    if held_out_fold is not None:
        info(f"held out fold {held_out_fold} of {folds}: {summary['held_out_sentences']} "
             f"sentences, trained on {summary['sentences']}")
    info(f"{summary['steps']} steps in {summary['train_seconds']:.0f} s, loss "
         f"{summary['train_loss']:.4f}"
         + (f"; labels with one sentence left out: {', '.join(left_out)}" if left_out else "")
         + f" -> {output_path}")

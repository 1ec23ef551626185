"""Cross-fitted retrieval for the generator's training prompts.

A retriever fine-tuned on the training split may find an example of a training sentence's own
relation more often than it would for a sentence it never saw, and a generator fine-tuned on
prompts built with it would learn to trust the example more than it deserves at inference.
Cross-fitting, as out-of-fold predictions are made for stacking, rules that out: the training
sentences are split into ``folds`` by their text (:func:`fold_of`), one retriever is trained per
fold with that fold held out (``spacy-lmrc train-retriever --folds K --held-out-fold i``), and
each training sentence takes its examples from the index of the retriever that never saw it. The
index still holds every training sentence, as at inference.

Measured on SemEval (BENCHMARKS.md): memorisation is worth about 2 points of top-1 agreement
there (75% on a held-out fold, 78% on the sentences trained on, 50% on dev: the dev split's
labels are the harder ones), and the label-hint generator trained on cross-fitted examples
scored 1.5 macro-F1 below the one trained on the single index's; the ``rag4re`` workflow does
not cross-fit.

A sentence's fold depends only on its :func:`~.retrieval.identity_text`, so duplicates of a
sentence share its fold and none of them trained the retriever that serves it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from .embedder import training_record
from .retrieval import EmbeddingIndex, identity_text


def fold_of(text: str, folds: int) -> int:
    """The fold (0 .. folds - 1) of a sentence: a stable hash of its identity text."""
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    return zlib.crc32(identity_text(text).encode("utf8")) % folds


def held_out_fold(index: EmbeddingIndex) -> tuple[int, int] | None:
    """``(held_out_fold, folds)`` of the embedder ``index`` was built with, as
    ``train-retriever`` recorded it; None for an embedder trained on all sentences (or not by
    ``train-retriever``)."""
    record: dict[str, Any] | None = training_record(index.embedder)
    if not record or record.get("held_out_fold") is None:
        return None
    return int(record["held_out_fold"]), int(record["folds"])


def order_by_fold(indexes: Sequence[EmbeddingIndex], sources: Sequence[str]) -> list[int]:
    """The positions of a cross-fitted set's indexes in the order of the fold their embedder
    held out (the first serves fold 0).

    Every index must come from an embedder trained with ``--held-out-fold``, all with the same
    number of folds, each fold held out by exactly one, all over the same training sentences;
    otherwise the error names the index and what was expected.
    """
    by_fold: dict[int, int] = {}
    counts = set()
    for position, (index, source) in enumerate(zip(indexes, sources)):
        fold = held_out_fold(index)
        if fold is None:
            raise ValueError(
                f"{source}: its embedder was trained on every training sentence; a cross-fitted "
                f"set needs one index per fold, each built with an embedder from "
                f"'spacy-lmrc train-retriever --folds K --held-out-fold i'")
        held_out, folds = fold
        counts.add(folds)
        if held_out in by_fold:
            raise ValueError(f"{source}: fold {held_out} of {folds} is held out by another "
                             f"index as well")
        by_fold[held_out] = position
    if len(counts) != 1:
        raise ValueError(f"the indexes {', '.join(sources)} were trained with different numbers "
                         f"of folds: {sorted(counts)}")
    folds = counts.pop()
    missing = sorted(set(range(folds)) - set(by_fold))
    if missing:
        raise ValueError(f"the indexes {', '.join(sources)} hold out folds {sorted(by_fold)} of "
                         f"{folds}: fold(s) {missing} have no index (train and index a retriever "
                         f"with --held-out-fold for each)")
    sizes = {len(index) for index in indexes}
    if len(sizes) != 1:
        raise ValueError(f"the indexes {', '.join(sources)} hold different numbers of "
                         f"sentences ({sorted(sizes)}): build each over the same training split")
    return [by_fold[fold] for fold in range(folds)]

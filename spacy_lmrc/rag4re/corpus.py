"""Sentence corpora with retrieved examples attached, for fine-tuning on RAG4RE prompts.

``spacy_lmrc.RetrievedSentenceCorpus.v1``: every reference Doc carries the
``doc._.rag_examples`` the ``rag4re_retriever`` finds for it in one training index.

``spacy_lmrc.RetrievedSentenceCorpus.v2``: one index, as v1, or a cross-fitted set (one index per
fold, see :mod:`.folds`): each training sentence then takes its examples from the index whose
embedder never saw it.

Both log how often a sentence's first example has the sentence's own label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch, registry
from wasabi import msg

from ..corpus.readers import to_examples
from ..corpus.sentence import SEMEVAL_NEGATIVE, read_sentence_corpus, sentence_label
from .folds import fold_of, order_by_fold
from .retriever import RagRetriever


@registry.readers("spacy_lmrc.RetrievedSentenceCorpus.v1")
def create_retrieved_sentence_corpus(
    path: Path,
    index_path: Path,
    relations_path: Path | None = None,
    label_names_path: Path | None = None,
    first: int | None = None,
    last: int | None = None,
    negative_label: str | None = None,
    k: int = 1,
    skip_invalid: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """A sentence corpus whose reference Docs carry ``doc._.rag_examples`` from ``index_path``.

    For fine-tuning on RAG4RE prompts (``spacy-lmrc finetune-classifier``): each training
    sentence retrieves its neighbours from the training index, embedded as the index was, with
    rows of the same text excluded, so no prompt shows its own sentence (or a duplicate of it)
    as the example.
    """
    return create_retrieved_sentence_corpus_v2(
        path, [index_path], relations_path=relations_path, label_names_path=label_names_path,
        first=first, last=last, negative_label=negative_label, k=k, skip_invalid=skip_invalid)


@registry.readers("spacy_lmrc.RetrievedSentenceCorpus.v2")
def create_retrieved_sentence_corpus_v2(
    path: Path,
    index_paths: Sequence[Path],
    relations_path: Path | None = None,
    label_names_path: Path | None = None,
    first: int | None = None,
    last: int | None = None,
    negative_label: str | None = None,
    k: int = 1,
    skip_invalid: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """As v1, with ``index_paths``: one index (v1), or the cross-fitted set of a retriever
    trained once per held-out fold (``spacy-lmrc train-retriever --folds K --held-out-fold i``
    and ``build-index`` with each), where every sentence retrieves from the index of its fold.

    Rows of the sentence's own text are excluded in every index (the leakage guard).
    """
    if not index_paths:
        raise ValueError("RetrievedSentenceCorpus.v2: index_paths is empty; give one index "
                         "folder or one per fold")
    negative = negative_label or SEMEVAL_NEGATIVE

    def reader(nlp: Language) -> Iterator[Example]:
        docs = list(read_sentence_corpus(
            path, nlp, relations_path=relations_path, label_names_path=label_names_path,
            first=first, last=last, negative_label=negative_label, skip_invalid=skip_invalid))
        retrievers = fold_retrievers(nlp, index_paths, k, negative)
        for fold, retriever in enumerate(retrievers):
            # with one index every sentence is in fold 0 of 1
            served = [doc for doc in docs if fold_of(doc.text, len(retrievers)) == fold]
            for batch in minibatch(served, size=256):
                retriever.retrieve(list(batch), exclude_identical=True)
        log_agreement(docs, negative, len(retrievers))
        yield from to_examples(docs)

    return reader


def fold_retrievers(nlp: Language, index_paths: Sequence[Path], k: int,
                    negative_label: str) -> list[RagRetriever]:
    """One retriever per index; for several, ordered by the fold their embedder held out."""
    retrievers = []
    for index_path in index_paths:
        retriever = RagRetriever(nlp.vocab, k=k, negative_label=negative_label)
        retriever.initialize(index_path=index_path)
        retrievers.append(retriever)
    if len(retrievers) == 1:
        return retrievers
    order = order_by_fold([r.index for r in retrievers], [str(p) for p in index_paths])
    return [retrievers[position] for position in order]


def log_agreement(docs: Sequence[Doc], negative_label: str, folds: int) -> None:
    """Log the share of Docs whose first retrieved example has the Doc's own label."""
    with_examples = [doc for doc in docs if doc._.rag_examples]
    agree = sum(doc._.rag_examples[0]["label"] == sentence_label(doc, negative_label)
                for doc in with_examples)
    how = "one index" if folds == 1 else f"{folds} cross-fitted indexes"
    msg.info(f"RetrievedSentenceCorpus: {len(with_examples)} of {len(docs)} training sentences "
             f"with examples ({how}); the first example has the sentence's label for {agree} "
             f"({100 * agree / max(1, len(with_examples)):.1f}%)")

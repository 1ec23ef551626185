"""``spacy_lmrc.RetrievedSentenceCorpus.v1``: a sentence corpus with retrieved examples attached.

The reader fine-tuning on RAG4RE prompts needs: every reference Doc carries the
``doc._.rag_examples`` the ``rag4re_retriever`` finds for it in a training index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.training import Example
from spacy.util import minibatch, registry

from ..corpus.readers import to_examples
from ..corpus.sentence import SEMEVAL_NEGATIVE, read_sentence_corpus
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

    def reader(nlp: Language) -> Iterator[Example]:
        docs = list(read_sentence_corpus(
            path, nlp, relations_path=relations_path, label_names_path=label_names_path,
            first=first, last=last, negative_label=negative_label, skip_invalid=skip_invalid))
        retriever = RagRetriever(nlp.vocab, k=k, negative_label=negative_label or SEMEVAL_NEGATIVE)
        retriever.initialize(index_path=index_path)
        for batch in minibatch(docs, size=256):
            retriever.retrieve(list(batch), exclude_identical=True)
        yield from to_examples(docs)

    return reader

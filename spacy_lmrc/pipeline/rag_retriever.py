"""``rag4re_retriever``: the retrieval module of RAG4RE as a spaCy component.

It embeds every Doc's text (entity markup stripped) with a sentence-transformers model and writes
the k most similar labelled training sentences (cosine similarity, k = 1 as in RAG4RE) to
``doc._.rag_examples`` as ``{"text", "head", "tail", "label", "similarity"}``. The
``llm_relation_classifier`` with the sentence task's RAG4RE template puts them into its prompt.

The index is built by :meth:`RagRetriever.initialize` from the training examples' reference Docs
(``nlp.initialize``), or loaded from a folder written by ``spacy-lmrc build-index`` (the
``index_path`` initialize setting). It is saved with the pipeline (``nlp.to_disk``).

A training sentence must not retrieve itself when prompts for fine-tuning are built from the
training split: :meth:`RagRetriever.retrieve` with ``exclude_identical=True`` (or the config
setting of the same name) skips index rows whose text equals the query's.
"""

# no ``from __future__ import annotations``: spaCy validates ``initialize``'s settings from its
# annotations, and cannot resolve postponed ones (``Path``) from this module
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import srsly
from spacy import util
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import SimpleFrozenList
from wasabi import msg

from ..corpus.sentence import SEMEVAL_NEGATIVE
from ..doc import RagExample

# the default scorer, and the reader that fine-tuning on RAG4RE prompts uses, register with the
# component (their registered names once pointed here, so they are importable from here too)
from ..metrics.scorers import make_rag_scorer  # noqa: F401
from ..retrieval import EmbeddingIndex, SentenceEmbedder, doc_record
from ..util import DEFAULT_ENCODER
from .batched import BatchedPipe
from .retrieved_corpus import create_retrieved_sentence_corpus  # noqa: F401

INDEX_DIR = "index"
CFG_FILE = "cfg.json"


@Language.factory(
    "rag4re_retriever",
    default_config={
        "embedder": DEFAULT_ENCODER,
        "k": 1,
        "batch_size": 64,
        "negative_label": SEMEVAL_NEGATIVE,
        "exclude_identical": False,
        "use_faiss": False,
        "chunk_size": 16384,
        "device": "cpu",
        "scorer": {"@scorers": "spacy_lmrc.rag_scorer.v1"},
    },
    assigns=["doc._.rag_examples"],
    default_score_weights={"rag_top1_label_acc": None, "rag_mean_similarity": None},
)
def make_rag_retriever(
    nlp: Language,
    name: str,
    embedder: str,
    k: int,
    batch_size: int,
    negative_label: str,
    exclude_identical: bool,
    use_faiss: bool,
    chunk_size: int,
    device: str,
    scorer: Callable | None,
) -> "RagRetriever":
    """RAG4RE retrieval.

    embedder: sentence-transformers model name or local path (default all-MiniLM-L6-v2).
    k: examples retrieved per Doc. negative_label: the label stored for sentences without a
    relation (``Other`` for SemEval, ``no_relation`` for TACRED). exclude_identical: never
    return an index sentence whose text equals the query's. use_faiss: search with faiss when it
    is installed. chunk_size: index rows per block of the exact numpy search (bounds memory).
    """
    return RagRetriever(nlp.vocab, name, embedder=embedder, k=k, batch_size=batch_size,
                        negative_label=negative_label, exclude_identical=exclude_identical,
                        use_faiss=use_faiss, chunk_size=chunk_size, device=device, scorer=scorer)


class RagRetriever(BatchedPipe):
    """Writes the k nearest labelled training sentences of each Doc to ``doc._.rag_examples``."""

    def __init__(self, vocab: Any, name: str = "rag4re_retriever", *,
                 embedder: str = DEFAULT_ENCODER, k: int = 1, batch_size: int = 64,
                 negative_label: str = SEMEVAL_NEGATIVE, exclude_identical: bool = False,
                 use_faiss: bool = False, chunk_size: int = 16384, device: str = "cpu",
                 scorer: Callable | None = None) -> None:
        if k < 1:
            raise ValueError(f"rag4re_retriever: k must be at least 1, got {k}")
        self.vocab = vocab
        self.name = name
        self.cfg: dict[str, Any] = {
            "embedder": embedder, "k": k, "batch_size": batch_size,
            "negative_label": negative_label, "exclude_identical": exclude_identical,
            "use_faiss": use_faiss, "chunk_size": chunk_size,
        }
        self.device = device
        self.scorer = scorer
        self.embedder = SentenceEmbedder(embedder, device=device, batch_size=batch_size)
        self.index: EmbeddingIndex | None = None
        self.skipped: Counter = Counter()
        self.timing: Counter = Counter()

    # ---------------------------------------------------------------- index
    def initialize(self, get_examples: Callable[[], Iterable[Example]] | None = None, *,
                   nlp: Language | None = None, index_path: Path | str | None = None) -> None:
        """Load the index from ``index_path``, or build it from the examples' reference Docs."""
        if index_path is not None:
            self.set_index(EmbeddingIndex.from_disk(index_path, use_faiss=self.cfg["use_faiss"]))
            return
        if get_examples is None:
            raise ValueError("rag4re_retriever.initialize needs training examples (get_examples) "
                             "or an index_path written by 'spacy-lmrc build-index'")
        self.build_index(eg.reference for eg in get_examples())

    def build_index(self, docs: Iterable[Doc], show_progress: bool = False) -> EmbeddingIndex:
        """Index one-pair sentence Docs; Docs with fewer than two entities are counted, skipped."""
        records = []
        self.skipped = Counter()
        for doc in docs:
            record = doc_record(doc, self.cfg["negative_label"])
            if record is None:
                self.skipped["fewer_than_two_entities"] += 1
            else:
                records.append(record)
        if self.skipped:
            msg.warn(f"rag4re_retriever: skipped {sum(self.skipped.values())} training Docs "
                     f"with fewer than two entities")
        if not records:
            raise ValueError("rag4re_retriever: no training Doc with two entities to index")
        self.set_index(EmbeddingIndex.build(records, self.embedder, show_progress=show_progress,
                                            use_faiss=self.cfg["use_faiss"]))
        return self.index  # type: ignore[return-value]

    def set_index(self, index: EmbeddingIndex) -> None:
        """Search ``index`` from now on; queries are embedded with the index's embedder."""
        if index.embedder != self.cfg["embedder"]:
            msg.warn(f"rag4re_retriever: the index was embedded with {index.embedder!r} but the "
                     f"component embeds queries with {self.cfg['embedder']!r}; using the index's")
            self.cfg["embedder"] = index.embedder
            self._load_embedder()
        self.index = index

    def _load_embedder(self) -> None:
        self.embedder = SentenceEmbedder(self.cfg["embedder"], device=self.device,
                                         batch_size=self.cfg["batch_size"])

    # ---------------------------------------------------------------- retrieval


    def predict(self, docs: Iterable[Doc], exclude_identical: bool | None = None,
                ) -> list[list[RagExample]]:
        """The k nearest training examples of each Doc; ``exclude_identical`` (default: the
        config's) skips index rows whose text equals the query's."""
        docs = list(docs)
        if self.index is None:
            raise ValueError(
                "rag4re_retriever has no index: run nlp.initialize() with training examples, "
                "or initialize it with an index_path from 'spacy-lmrc build-index'")
        if not docs:
            return []
        if exclude_identical is None:
            exclude_identical = self.cfg["exclude_identical"]
        t0 = time.perf_counter()
        queries = self.embedder.encode([doc.text for doc in docs])
        t1 = time.perf_counter()
        exclude = None
        if exclude_identical:
            exclude = [self.index.ids_with_text(doc.text) for doc in docs]
        ids, scores = self.index.search(queries, k=self.cfg["k"], exclude=exclude,
                                        chunk_size=self.cfg["chunk_size"])
        t2 = time.perf_counter()
        self.timing["queries"] += len(docs)
        self.timing["embed_s"] += t1 - t0
        self.timing["search_s"] += t2 - t1
        return [self.index.examples(row_ids, row_scores)
                for row_ids, row_scores in zip(ids, scores)]

    def set_annotations(self, docs: Iterable[Doc], examples: list[list[RagExample]]) -> None:
        """Write what :meth:`predict` returned to ``doc._.rag_examples``."""
        for doc, doc_examples in zip(docs, examples):
            doc._.rag_examples = doc_examples

    def retrieve(self, docs: list[Doc], exclude_identical: bool | None = None) -> list[Doc]:
        """Set ``doc._.rag_examples`` on ``docs``; ``exclude_identical`` overrides the config."""
        self.set_annotations(docs, self.predict(docs, exclude_identical))
        return docs

    # ---------------------------------------------------------------- serialization
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        """Settings in ``cfg.json`` and the index (when built) in ``index/``; ``exclude``
        names either."""
        serializers = {CFG_FILE: lambda p: srsly.write_json(p, self.cfg)}
        if self.index is not None:
            serializers[INDEX_DIR] = lambda p: self.index.to_disk(p)
        util.to_disk(path, serializers, exclude)

    def from_disk(self, path: str | Path, *,
                  exclude: Iterable[str] = SimpleFrozenList()) -> "RagRetriever":
        """Read back what :meth:`to_disk` wrote."""

        def read_cfg(p: Path) -> None:
            if p.exists():
                self.cfg.update(srsly.read_json(p))
                self._load_embedder()

        def read_index(p: Path) -> None:
            if p.exists():
                self.index = EmbeddingIndex.from_disk(p, use_faiss=self.cfg["use_faiss"])

        util.from_disk(path, {CFG_FILE: read_cfg, INDEX_DIR: read_index}, exclude)
        return self

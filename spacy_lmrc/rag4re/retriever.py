"""``rag4re_retriever``: the retrieval module of RAG4RE as a spaCy component.

It embeds every Doc in the index's representation (see :mod:`.representation`) with the
index's sentence-transformers model and writes the k most similar labelled training sentences
(cosine similarity, k = 1 as in RAG4RE) to ``doc._.rag_examples`` as ``{"text", "head",
"tail", "label", "similarity"}``. The ``llm_relation_classifier`` with the sentence task's
RAG4RE template puts them into its prompt.

The index is built by :meth:`RagRetriever.initialize` from the training examples' reference Docs
(``nlp.initialize``), or loaded from a folder written by ``spacy-lmrc build-index`` (the
``index_path`` initialize setting). It is saved with the pipeline (``nlp.to_disk`` and
``nlp.to_bytes``), a fine-tuned embedder with it.

Queries must be embedded as the index was: with ``embedder`` and ``representation`` left null
the component takes the index's; set, they must match it (the embedder by its weights'
fingerprint), else it refuses with an error naming both.

Leakage guard: with ``exclude_identical`` (the default) a query never retrieves an index
sentence with its own text (markup stripped, whitespace collapsed), so a training sentence
never sees itself or a duplicate of itself, when prompts for fine-tuning are built and when a
split is evaluated against an index that holds it.
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
from ..pipeline.batched import BatchedPipe
from ..util import DEFAULT_ENCODER
from .embedder import SentenceEmbedder, canonical_name, representation_for
from .representation import Representation
from .retrieval import EmbeddingIndex

INDEX_DIR = "index"
CFG_FILE = "cfg.json"


@Language.factory(
    "rag4re_retriever",
    default_config={
        "embedder": None,
        "representation": None,
        "k": 1,
        "batch_size": 64,
        "negative_label": SEMEVAL_NEGATIVE,
        "exclude_identical": True,
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
    embedder: str | None,
    representation: str | None,
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

    embedder: sentence-transformers model name or local path; null: the index's (an index
    built by ``initialize`` then uses all-MiniLM-L6-v2). representation: ``sentence``,
    ``marked``, ``span[:N]`` or ``pair``; null: the index's (built by ``initialize``: the one
    the embedder was trained with, else ``sentence``). k: examples retrieved per Doc.
    negative_label: the label stored for sentences without a relation (``Other`` for SemEval,
    ``no_relation`` for TACRED). exclude_identical: never return an index sentence with the
    query's text. use_faiss: search with faiss when it is installed. chunk_size: index rows
    per block of the exact numpy search (bounds memory).
    """
    return RagRetriever(nlp.vocab, name, embedder=embedder, representation=representation,
                        k=k, batch_size=batch_size, negative_label=negative_label,
                        exclude_identical=exclude_identical, use_faiss=use_faiss,
                        chunk_size=chunk_size, device=device, scorer=scorer)


class RagRetriever(BatchedPipe):
    """Writes the k nearest labelled training sentences of each Doc to ``doc._.rag_examples``."""

    def __init__(self, vocab: Any, name: str = "rag4re_retriever", *,
                 embedder: str | None = None, representation: str | None = None, k: int = 1,
                 batch_size: int = 64, negative_label: str = SEMEVAL_NEGATIVE,
                 exclude_identical: bool = True, use_faiss: bool = False,
                 chunk_size: int = 16384, device: str = "cpu",
                 scorer: Callable | None = None) -> None:
        if k < 1:
            raise ValueError(f"rag4re_retriever: k must be at least 1, got {k}")
        if representation is not None:
            Representation.parse(representation)
        self.vocab = vocab
        self.name = name
        self.cfg: dict[str, Any] = {
            "embedder": embedder, "representation": representation, "k": k,
            "batch_size": batch_size, "negative_label": negative_label,
            "exclude_identical": exclude_identical, "use_faiss": use_faiss,
            "chunk_size": chunk_size,
        }
        self.device = device
        self.scorer = scorer
        self.index: EmbeddingIndex | None = None
        self.embedder: SentenceEmbedder | None = None
        self._checked = False
        self.skipped: Counter = Counter()
        self.timing: Counter = Counter()

    # ---------------------------------------------------------------- index
    def initialize(self, get_examples: Callable[[], Iterable[Example]] | None = None, *,
                   nlp: Language | None = None, index_path: Path | str | None = None) -> None:
        """Load the index from ``index_path``, or build it from the examples' reference Docs."""
        if index_path is not None:
            self.set_index(EmbeddingIndex.from_disk(index_path, use_faiss=self.cfg["use_faiss"]),
                           source=str(index_path))
            return
        if get_examples is None:
            raise ValueError("rag4re_retriever.initialize needs training examples (get_examples) "
                             "or an index_path written by 'spacy-lmrc build-index'")
        self.build_index(eg.reference for eg in get_examples())

    def build_index(self, docs: Iterable[Doc], show_progress: bool = False) -> EmbeddingIndex:
        """Index one-pair sentence Docs; Docs with fewer than two entities are counted, skipped."""
        kept = []
        self.skipped = Counter()
        for doc in docs:
            if len(doc._.entities) < 2:
                self.skipped["fewer_than_two_entities"] += 1
            else:
                kept.append(doc)
        if self.skipped:
            msg.warn(f"rag4re_retriever: skipped {sum(self.skipped.values())} training Docs "
                     f"with fewer than two entities")
        if not kept:
            raise ValueError("rag4re_retriever: no training Doc with two entities to index")
        name = self.cfg["embedder"] or DEFAULT_ENCODER
        embedder = SentenceEmbedder(name, device=self.device, batch_size=self.cfg["batch_size"])
        index = EmbeddingIndex.build(kept, embedder,
                                     representation_for(name, self.cfg["representation"]),
                                     self.cfg["negative_label"], show_progress=show_progress,
                                     use_faiss=self.cfg["use_faiss"])
        self.set_index(index, source="the initialize examples")
        return index

    def set_index(self, index: EmbeddingIndex, source: str = "the given index") -> None:
        """Search ``index`` from now on, embedding queries as it was embedded; a configured
        embedder or representation that differs from the index's is an error."""
        wanted = self.cfg["representation"]
        if wanted is not None and Representation.parse(wanted) != index.representation:
            raise ValueError(
                f"rag4re_retriever: the index of {source} embeds the {index.representation} "
                f"representation but the component is configured for {wanted!r}; set "
                f"representation to null (the index's) or rebuild the index with "
                f"'spacy-lmrc build-index --representation {wanted}'")
        embedder = SentenceEmbedder(index.embedder, device=self.device,
                                    batch_size=self.cfg["batch_size"])
        configured = self.cfg["embedder"]
        # the name the index was built from stands for its (bundled) copy, so a saved pipeline
        # loads where that folder is gone; any other model must have the index's fingerprint
        other = configured is not None and canonical_name(configured) not in (
            index.embedder, index.source)
        if other:
            embedder = SentenceEmbedder(configured, device=self.device,
                                        batch_size=self.cfg["batch_size"])
            check_same_embedder(index, embedder, source)
        self.index = index
        self.embedder = embedder
        self._checked = other

    def _query_embedder(self) -> SentenceEmbedder:
        """The embedder queries go through, checked once against the index's fingerprint."""
        if self.index is None or self.embedder is None:
            raise ValueError(
                "rag4re_retriever has no index: run nlp.initialize() with training examples, "
                "or initialize it with an index_path from 'spacy-lmrc build-index'")
        if not self._checked:
            check_same_embedder(self.index, self.embedder, "the loaded index")
            self._checked = True
        return self.embedder

    # ---------------------------------------------------------------- retrieval
    def predict(self, docs: Iterable[Doc], exclude_identical: bool | None = None,
                ) -> list[list[RagExample]]:
        """The k nearest training examples of each Doc; ``exclude_identical`` (default: the
        config's) skips index rows with the query's text."""
        docs = list(docs)
        embedder = self._query_embedder()
        if not docs:
            return []
        if exclude_identical is None:
            exclude_identical = self.cfg["exclude_identical"]
        t0 = time.perf_counter()
        queries = embedder.encode([self.index.representation(doc) for doc in docs])
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

        def read_index(p: Path) -> None:
            if p.exists():
                self.set_index(EmbeddingIndex.from_disk(p, use_faiss=self.cfg["use_faiss"]),
                               source=str(p))

        util.from_disk(path, {CFG_FILE: lambda p: self._read_cfg(srsly.read_json(p)),
                              INDEX_DIR: read_index}, exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = SimpleFrozenList()) -> bytes:
        """Settings and the index (a bundled embedder included) as bytes; ``exclude`` names
        ``cfg`` or ``index``."""
        serializers: dict[str, Callable[[], Any]] = {"cfg": lambda: srsly.json_dumps(self.cfg)}
        if self.index is not None:
            serializers["index"] = self.index.to_bytes
        return util.to_bytes(serializers, exclude)

    def from_bytes(self, bytes_data: bytes, *,
                   exclude: Iterable[str] = SimpleFrozenList()) -> "RagRetriever":
        """Read back what :meth:`to_bytes` wrote."""

        def read_index(data: bytes) -> None:
            self.set_index(EmbeddingIndex.from_bytes(data, use_faiss=self.cfg["use_faiss"]),
                           source="the serialized pipeline")

        util.from_bytes(bytes_data, {"cfg": lambda b: self._read_cfg(srsly.json_loads(b)),
                                     "index": read_index}, exclude)
        return self

    def _read_cfg(self, cfg: dict[str, Any]) -> None:
        self.cfg.update(cfg)
        self.cfg.setdefault("representation", None)


def check_same_embedder(index: EmbeddingIndex, embedder: SentenceEmbedder, source: str) -> None:
    """Refuse a query embedder that is not the one ``index`` was embedded with: by weights'
    fingerprint, or by name for an index without one."""
    if index.fingerprint is None:
        same = canonical_name(embedder.name) == index.embedder
        detail = "(the index records no fingerprint; names compared)"
    else:
        same = embedder.fingerprint == index.fingerprint
        detail = (f"(fingerprints: index {index.fingerprint}, "
                  f"query embedder {embedder.fingerprint})")
    if not same:
        raise ValueError(
            f"rag4re_retriever: the index of {source} was embedded with {index.embedder!r} but "
            f"queries would be embedded with {embedder.name!r}, a different model {detail}; "
            f"set the component's embedder to null (the index's) or rebuild the index with "
            f"'spacy-lmrc build-index --embedder {embedder.name}'")

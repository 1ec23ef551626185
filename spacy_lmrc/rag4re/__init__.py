"""RAG4RE's retrieval, in one place.

* :mod:`.representation`: what is embedded for a sentence and its entity pair;
* :mod:`.embedder`: the sentence-transformers embedder, its fingerprint;
* :mod:`.pooling`: entity-start pooling, the embedder's vector read at the ``<e1>`` and
  ``<e2>`` markers (``train-retriever --pooling entity_start``);
* :mod:`.training`: fine-tuning the embedder so neighbours share a relation
  (``spacy-lmrc train-retriever``);
* :mod:`.retrieval`: the embedding index (``spacy-lmrc build-index``) and its exact search;
* :mod:`.retriever`: the ``rag4re_retriever`` component;
* :mod:`.corpus`: ``spacy_lmrc.RetrievedSentenceCorpus.v1``, the training reader for
  fine-tuning the generator on RAG4RE prompts.

The component and the reader register through the package's entry points; importing this
package imports neither.
"""

from .embedder import SentenceEmbedder, model_fingerprint, unit_rows
from .representation import Representation
from .retrieval import EmbeddingIndex, doc_record, identity_text, topk_chunked

__all__ = ["EmbeddingIndex", "Representation", "SentenceEmbedder", "doc_record",
           "identity_text", "model_fingerprint", "topk_chunked", "unit_rows"]

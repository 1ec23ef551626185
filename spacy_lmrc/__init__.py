"""spacy-lmrc: relation extraction with LLMs in spaCy (LMRC and RAG4RE).

Importing the package registers the ``Doc._`` extensions of :mod:`spacy_lmrc.doc` and the
corpus readers; the pipeline components register through the ``spacy_factories`` entry points.
"""

from .doc import register_extensions

register_extensions()

# the readers and spacy_lmrc.ConcatenateTok2Vec.v1 register on import
from . import corpus, curated  # noqa: E402,F401
from .corpus import ner, readers  # noqa: E402,F401

__version__ = "0.1.0"
__all__ = ["corpus", "register_extensions", "__version__"]

"""spacy-lmrc: relation extraction with LLMs in spaCy (LMRC and RAG4RE).

Importing the package registers the ``Doc._`` extensions of :mod:`spacy_lmrc.doc`. Every
registered name (components, tasks, backends, formats, readers, scorers...) registers through
the package's entry points (``pyproject.toml``), so spaCy finds it without an import.
"""

from .doc import register_extensions

register_extensions()

__version__ = "0.1.0"
__all__ = ["register_extensions", "__version__"]

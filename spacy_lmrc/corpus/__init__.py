"""Corpus readers: benchmark files in, spaCy Docs with the schema of :mod:`spacy_lmrc.doc` out."""

from .docred import docred_record_to_doc, docs_to_result, read_docred
from .io import load_json_records, select_records
from .sentence import (
    read_semeval,
    read_sentence_corpus,
    read_tacred,
    sentence_label,
)

__all__ = [
    "docred_record_to_doc",
    "docs_to_result",
    "load_json_records",
    "read_docred",
    "read_semeval",
    "read_sentence_corpus",
    "read_tacred",
    "select_records",
    "sentence_label",
]

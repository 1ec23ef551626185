"""Shared fixtures: a blank English pipeline, a hand-written DocRED document, the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy

import spacy_lmrc  # noqa: F401  (registers the Doc extensions)
from spacy_lmrc.corpus import docred_record_to_doc

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project; integration tests skip without it."""
    if not (SHARED_DATA / "redocred" / "dev_revised.json").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA.resolve()} (integration test)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with MiniLM's tokenizer, saved as a Hugging Face folder."""
    from .tiny_models import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer Llama with SmolLM2's tokenizer and chat template, saved as a folder."""
    from .tiny_models import make_tiny_llama

    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    """A one-layer T5 with SmolLM2's tokenizer: a seq2seq model, answered by text prompts."""
    from .tiny_models import make_tiny_t5

    return str(make_tiny_t5(tmp_path_factory.mktemp("tiny_t5")))


@pytest.fixture
def nlp():
    return spacy.blank("en")


TOY_RECORD = {
    "title": "Ada Lovelace",
    "sents": [
        ["Ada", "Lovelace", "was", "born", "in", "London", "."],
        ["She", "worked", "with", "Charles", "Babbage", "in", "London", "."],
        ["Babbage", "designed", "the", "Analytical", "Engine", "."],
    ],
    "vertexSet": [
        [{"name": "Ada Lovelace", "pos": [0, 2], "sent_id": 0, "type": "PER"},
         {"name": "She", "pos": [0, 1], "sent_id": 1, "type": "PER"}],
        [{"name": "London", "pos": [5, 6], "sent_id": 0, "type": "LOC"},
         {"name": "London", "pos": [6, 7], "sent_id": 1, "type": "LOC"}],
        [{"name": "Charles Babbage", "pos": [3, 5], "sent_id": 1, "type": "PER"},
         {"name": "Babbage", "pos": [0, 1], "sent_id": 2, "type": "PER"}],
        [{"name": "Analytical Engine", "pos": [3, 5], "sent_id": 2, "type": "MISC"}],
    ],
    "labels": [
        {"h": 0, "t": 1, "r": "P19", "evidence": [0]},
        {"h": 3, "t": 2, "r": "P170", "evidence": [2]},
        {"h": 0, "t": 2, "r": "P1327", "evidence": [1]},
    ],
}


@pytest.fixture
def toy_record() -> dict:
    import copy

    return copy.deepcopy(TOY_RECORD)


@pytest.fixture
def toy_doc(nlp):
    return docred_record_to_doc(TOY_RECORD, nlp.vocab, path="toy.json", index=0)

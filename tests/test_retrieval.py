"""The RAG4RE embedding index and the rag4re_retriever component."""

from __future__ import annotations

import numpy as np
import pytest
import spacy
from spacy.training import Example

from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc
from spacy_lmrc.rag4re import EmbeddingIndex, SentenceEmbedder, topk_chunked, unit_rows

TRAIN = [
    ("The <e1>child</e1> was carefully wrapped and bound into the <e2>cradle</e2> by means of "
     "a cord.", "Entity-Destination(e1,e2)"),
    ("The <e1>burst</e1> has been caused by water hammer <e2>pressure</e2>.",
     "Cause-Effect(e2,e1)"),
    ("The <e1>author</e1> of a keygen uses a <e2>disassembler</e2> to look at the raw "
     "assembly code.", "Instrument-Agency(e2,e1)"),
    ("The <e1>ear</e1> of the rabbit was longer than its <e2>tail</e2>.", "Other"),
    ("A <e1>company</e1> of soldiers marched into the <e2>town</e2>.", "Other"),
]


def sentence_docs(nlp, rows):
    return [semeval_sentence_to_doc(text, label, nlp, title=str(i))
            for i, (text, label) in enumerate(rows)]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def brute_force(index: np.ndarray, queries: np.ndarray, k: int):
    sims = queries @ index.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(sims, ids, axis=1)


def test_chunked_topk_equals_brute_force():
    rng = np.random.default_rng(0)
    index = unit_rows(rng.normal(size=(1000, 16)))
    queries = unit_rows(rng.normal(size=(37, 16)))
    ids, scores = topk_chunked(index, queries, 5, chunk_size=64, query_block=8)
    want_ids, want_scores = brute_force(index, queries, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_chunked_topk_excludes_rows_and_pads():
    rng = np.random.default_rng(1)
    index = unit_rows(rng.normal(size=(10, 4)))
    ids, _ = topk_chunked(index, index[:3], 1, chunk_size=3)
    assert ids[:, 0].tolist() == [0, 1, 2]
    ids, _ = topk_chunked(index, index[:3], 1, exclude=[[0], [1], [2]], chunk_size=3)
    assert all(ids[i, 0] != i for i in range(3))
    ids, scores = topk_chunked(index[:2], index[:1], 4)
    assert ids[0, 2:].tolist() == [-1, -1] and np.isneginf(scores[0, 2:]).all()


def test_identical_query_is_retrieved_first(nlp, embedder):
    docs = sentence_docs(nlp, TRAIN)
    index = EmbeddingIndex.build(docs, embedder, "sentence", "Other")
    queries = embedder.encode([index.representation(docs[2])])
    ids, scores = index.search(queries, k=2)
    assert ids[0, 0] == 2
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    norms = np.linalg.norm(index.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert index.embeddings.dtype == np.float32
    assert "<e1>" not in index.records[0]["text"]
    assert [r["label"] for r in index.records] == [label for _, label in TRAIN]
    ids, _ = index.search(queries, k=1, exclude=[index.ids_with_text(TRAIN[2][0])])
    assert ids[0, 0] != 2


def test_index_save_load_identity(tmp_path):
    rng = np.random.default_rng(2)
    records = [{"text": f"s{i}", "head": "a", "tail": "b", "label": "L"} for i in range(20)]
    index = EmbeddingIndex(unit_rows(rng.normal(size=(20, 8))), records, "my-embedder",
                           fingerprint="abc", representation="span:2")
    index.to_disk(tmp_path / "idx")
    loaded = EmbeddingIndex.from_disk(tmp_path / "idx")
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), index.embeddings)
    assert loaded.records == records and loaded.embedder == "my-embedder"
    assert (loaded.fingerprint, str(loaded.representation)) == ("abc", "span:2")
    assert loaded.bundled is None
    queries = unit_rows(rng.normal(size=(5, 8)))
    for a, b in zip(index.search(queries, k=3), loaded.search(queries, k=3)):
        np.testing.assert_array_equal(a, b)


def test_index_from_missing_folder_is_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-index"):
        EmbeddingIndex.from_disk(tmp_path)


def test_retriever_component_roundtrip(tmp_path, nlp):
    docs = sentence_docs(nlp, TRAIN)
    nlp.add_pipe("rag4re_retriever", config={"k": 2})
    nlp.initialize(lambda: [Example(input_copy(d), d) for d in docs])
    query = input_copy(docs[1])
    out = nlp(query)
    assert [set(ex) for ex in out._.rag_examples] == [
        {"text", "head", "tail", "label", "similarity"}] * 2
    # the leakage guard is on by default: never the query's own sentence
    assert all(ex["text"] != docs[1].text for ex in out._.rag_examples)
    assert out._.rag_examples[0]["similarity"] >= out._.rag_examples[1]["similarity"]
    retriever = nlp.get_pipe("rag4re_retriever")
    retriever.retrieve([query], exclude_identical=False)
    first = query._.rag_examples[0]
    assert first["label"] == "Cause-Effect(e2,e1)" and first["head"] == "burst"
    assert first["text"] == docs[1].text
    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    loaded.get_pipe("rag4re_retriever").cfg["exclude_identical"] = False
    again = list(loaded.pipe([input_copy(d) for d in docs]))
    assert [d._.rag_examples[0]["text"] for d in again] == [d.text for d in docs]
    scores = loaded.evaluate([Example(d, ref) for d, ref in zip(again, docs)])
    assert scores["rag_top1_label_acc"] == pytest.approx(1.0)


def test_retriever_without_index_says_what_to_do(nlp):
    nlp.add_pipe("rag4re_retriever")
    with pytest.raises(ValueError, match="build-index"):
        nlp("Some text.")


def test_build_index_cli_and_initialize_from_it(tmp_path, nlp):
    import json

    from typer.testing import CliRunner

    from spacy_lmrc.cli import app

    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"sentence": s, "relation": r} for s, r in TRAIN]))
    result = CliRunner().invoke(app, ["build-index", str(data), str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    nlp.add_pipe("rag4re_retriever")
    nlp.config["initialize"]["components"]["rag4re_retriever"] = {
        "index_path": str(tmp_path / "idx")}
    nlp.initialize()
    assert len(nlp.get_pipe("rag4re_retriever").index) == len(TRAIN)
    doc = nlp(input_copy(sentence_docs(nlp, TRAIN[:1])[0]))
    assert doc._.rag_examples[0]["text"] != doc.text  # the leakage guard
    nlp.get_pipe("rag4re_retriever").retrieve([doc], exclude_identical=False)
    assert doc._.rag_examples[0]["label"] == TRAIN[0][1]


def test_faiss_path_matches_numpy_search(monkeypatch):
    """The faiss branch (exact inner product) gives the numpy search's answer, exclusions
    included; a stand-in module replaces faiss where it is not installed."""
    import sys
    import types

    class FlatIP:
        def __init__(self, dim):
            self.vectors = np.zeros((0, dim), dtype=np.float32)

        def add(self, vectors):
            self.vectors = np.concatenate([self.vectors, vectors])

        def search(self, queries, k):
            ids, scores = topk_chunked(self.vectors, queries, k)
            return scores, ids

    if "faiss" not in sys.modules:
        try:
            import faiss  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=FlatIP))
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng.normal(size=(50, 8)))
    records = [{"text": str(i)} for i in range(50)]
    plain = EmbeddingIndex(vectors, records, "e")
    with_faiss = EmbeddingIndex(vectors, records, "e", use_faiss=True)
    assert with_faiss.use_faiss
    exclude = [[i] for i in range(5)]
    for a, b in zip(plain.search(vectors[:5], k=3, exclude=exclude),
                    with_faiss.search(vectors[:5], k=3, exclude=exclude)):
        np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_training_reader_never_retrieves_the_sentence_itself(tmp_path, nlp, embedder, k):
    """spacy_lmrc.RetrievedSentenceCorpus.v1 (fine-tuning on RAG4RE prompts): every training
    sentence gets its k nearest other sentences, best first, never its own text."""
    import json

    from spacy.util import registry

    from spacy_lmrc.corpus.sentence import strip_markup

    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"sentence": s, "relation": r} for s, r in TRAIN]))
    EmbeddingIndex.build(sentence_docs(nlp, TRAIN), embedder, "sentence",
                         "Other").to_disk(tmp_path / "idx")
    reader = registry.readers.get("spacy_lmrc.RetrievedSentenceCorpus.v1")(
        path=data, index_path=tmp_path / "idx", k=k)
    examples = list(reader(nlp))
    assert len(examples) == len(TRAIN)
    for eg, (text, _) in zip(examples, TRAIN):
        found = eg.reference._.rag_examples
        assert len(found) == k
        assert all(ex["text"] != strip_markup(text) for ex in found)
        similarities = [ex["similarity"] for ex in found]
        assert similarities == sorted(similarities, reverse=True)
        assert {"text", "head", "tail", "label"} <= set(found[0])

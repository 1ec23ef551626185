"""DocRED mentions as NER training data, and the NER training configs: spaCy's ner on a CNN
(configs/ner.cfg) and on a transformer through spacy-curated-transformers (configs/ner_trf.cfg,
configs/ner_trf_cased.cfg), each initialised and updated a few steps on a hand-written document."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.training.initialize import init_nlp
from spacy.util import load_config, registry

from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.ner import INSIDE_OR_CROSSING, SAME_SPAN, ner_reference, ner_spans

from .conftest import TOY_RECORD

ROOT = Path(__file__).resolve().parents[1]


def overlapping_record() -> dict:
    """The toy document plus two overlapping mentions: "London" again as a second entity (same
    span, another entity) and "Analytical" as a mention inside "Analytical Engine"."""
    record = copy.deepcopy(TOY_RECORD)
    record["vertexSet"].append([{"name": "London", "pos": [5, 6], "sent_id": 0, "type": "ORG"}])
    record["vertexSet"].append([{"name": "Analytical", "pos": [3, 4], "sent_id": 2,
                                 "type": "MISC"}])
    return record


def test_mentions_become_non_overlapping_typed_ents(nlp):
    doc = docred_record_to_doc(overlapping_record(), nlp.vocab)
    spans, dropped = ner_spans(doc)
    assert [(s.text, s.label_) for s in spans] == [
        ("Ada Lovelace", "PER"), ("London", "LOC"), ("She", "PER"), ("Charles Babbage", "PER"),
        ("London", "LOC"), ("Babbage", "PER"), ("Analytical Engine", "MISC")]
    assert dropped == {SAME_SPAN: 1, INSIDE_OR_CROSSING: 1}

    reference, _ = ner_reference(doc)
    assert [e.text for e in reference.ents] == [s.text for s in spans]
    assert [t.ent_iob_ for t in reference[:4]] == ["B", "I", "O", "O"]
    assert [s.text.split()[0] for s in reference.sents] == ["Ada", "She", "Babbage"]
    assert reference._.title == "Ada Lovelace" and len(reference._.entities) == 6


def test_reader_yields_text_examples_and_prints_what_it_dropped(tmp_path, capsys):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([TOY_RECORD, dict(overlapping_record(), title="other")]))
    reader = registry.resolve({"c": {"@readers": "spacy_lmrc.DocRedNerCorpus.v1",
                                     "path": str(path), "last": 1}})["c"]
    nlp = spacy.blank("en")
    examples = list(reader(nlp))
    assert len(examples) == 1 and examples[0].reference._.title == "other"
    # the input side is the plain text as the tokenizer splits it: no entities, no sentences
    assert examples[0].predicted.text == examples[0].reference.text
    assert not examples[0].predicted.ents
    assert "1 documents, 9 gold mentions -> 7 entity spans; dropped 1 overlapping a longer " \
           "(or earlier) kept mention, 1 same span as a kept mention" in capsys.readouterr().err
    list(reader(nlp))
    assert capsys.readouterr().err == ""  # printed once per selection


def _train_steps(config_path: Path, data: Path, overrides: dict, steps: int) -> spacy.Language:
    """``init_nlp`` on the config with the toy data as train and dev, then ``steps`` updates."""
    config = load_config(config_path, overrides={
        "paths.train": str(data), "paths.dev": str(data), "corpora.train.first": None,
        "corpora.dev.last": None, **overrides}, interpolate=True)
    nlp = init_nlp(config)
    training = registry.resolve(config["training"])
    corpus = registry.resolve({"c": config["corpora"]["train"]})["c"]
    optimizer = training["optimizer"]
    examples = list(corpus(nlp))
    for _ in range(steps):
        losses = nlp.update(examples, sgd=optimizer)
    assert losses["ner"] > 0 and losses["senter"] > 0
    return nlp


def test_cnn_config_trains_and_labels_docred_types(tmp_path):
    data = tmp_path / "docs.json"
    data.write_text(json.dumps([TOY_RECORD]))
    nlp = _train_steps(ROOT / "configs" / "ner.cfg", data, {}, 3)
    assert nlp.pipe_names == ["tok2vec", "senter", "ner"]
    assert set(nlp.get_pipe("ner").labels) == {"PER", "LOC", "MISC"}
    nlp.to_disk(tmp_path / "ner")
    assert spacy.load(tmp_path / "ner")("Ada Lovelace was born in London .").has_annotation(
        "SENT_START")


def test_concatenate_tok2vec_splits_the_gradient_and_drops_input_gradients(nlp):
    """spacy_lmrc.ConcatenateTok2Vec.v1: per-doc hstack, each layer gets its columns of the
    output gradient, and a layer returning None for its input (as a listener does) is fine."""
    from thinc.api import Model

    seen: dict[str, list] = {}

    def fake(name: str, width: int, value: float, input_grad):
        def forward(model, docs, is_train):
            def backprop(dY):
                seen[name] = dY
                return input_grad
            return [model.ops.alloc2f(len(d), width) + value for d in docs], backprop
        return Model(name, forward, dims={"nO": width})

    layer = registry.resolve({"t2v": {
        "@architectures": "spacy_lmrc.ConcatenateTok2Vec.v1",
        "*": {"a": fake("a", 2, 1.0, None), "b": fake("b", 3, 2.0, [])}}})["t2v"]
    assert layer.get_dim("nO") == 5
    docs = [nlp("one two"), nlp("three")]
    Y, backprop = layer(docs, is_train=True)
    assert [y.tolist() for y in Y] == [[[1, 1, 2, 2, 2]] * 2, [[1, 1, 2, 2, 2]]]
    assert backprop([y * 10 for y in Y]) == []
    assert [d.tolist() for d in seen["a"]] == [[[10, 10]] * 2, [[10, 10]]]
    assert [d.tolist() for d in seen["b"]] == [[[20, 20, 20]] * 2, [[20, 20, 20]]]


@pytest.mark.parametrize("name", ["ner_trf.cfg", "ner_trf_cased.cfg"])
def test_transformer_config_trains_with_the_tiny_encoder(name, tmp_path, tiny_encoder_dir):
    """configs/ner_trf.cfg (and ner_trf_cased.cfg, whose ner and senter add a cased CNN to the
    transformer listener) with the 2-layer encoder's sizes: the loaders read the folder, and
    the loss fix lets the curated transformer take update steps under NumPy 2.4."""
    pytest.importorskip("spacy_curated_transformers")
    data = tmp_path / "docs.json"
    data.write_text(json.dumps([TOY_RECORD]))
    sizes = {"hidden_width": 32, "intermediate_width": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4}
    overrides = {f"components.transformer.model.{k}": v for k, v in sizes.items()}
    overrides["paths.encoder"] = str(tiny_encoder_dir)
    nlp = _train_steps(ROOT / "configs" / name, data, overrides, 2)
    assert nlp.pipe_names == ["transformer", "senter", "ner"]
    if name == "ner_trf_cased.cfg":  # listener (hidden width 32 here) beside a width-96 CNN
        ner_t2v = nlp.get_pipe("ner").model.get_ref("tok2vec").layers[0]  # before the projection
        senter_t2v = nlp.get_pipe("senter").model.get_ref("tok2vec")
        assert ner_t2v.get_dim("nO") == senter_t2v.get_dim("nO") == 32 + 96
    nlp.to_disk(tmp_path / "ner_trf")
    doc = spacy.load(tmp_path / "ner_trf")("Ada Lovelace was born in London .")
    assert doc.has_annotation("SENT_START")


@pytest.mark.integration
@pytest.mark.slow
def test_spacy_train_on_a_few_shared_documents(shared_data, tmp_path):
    """`spacy train configs/ner.cfg` as the workflow runs it, on 5 train and 3 dev documents."""
    proc = subprocess.run(
        [sys.executable, "-m", "spacy", "train", "configs/ner.cfg", "--output", str(tmp_path),
         "--paths.train", str(shared_data / "redocred" / "dev_revised.json"),
         "--paths.dev", str(shared_data / "redocred" / "dev_revised.json"),
         "--corpora.train.first", "5", "--corpora.dev.last", "3",
         "--training.max_steps", "5", "--training.eval_frequency", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "5 documents, 157 gold mentions -> 156 entity spans" in proc.stderr
    meta = json.loads((tmp_path / "model-best" / "meta.json").read_text())
    assert set(meta["labels"]["ner"]) <= {"PER", "ORG", "LOC", "TIME", "NUM", "MISC"}

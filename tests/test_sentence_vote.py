"""The retrieved examples' label vote fused with the LLM's answer (the sentence task's
``vote_weight``), and the most probable label the task decodes (its ``label_floor``)."""

from __future__ import annotations

import math

import pytest
import spacy
from spacy.util import registry

from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc
from spacy_lmrc.tasks.base import ParseStats
from spacy_lmrc.tasks.sentence import DEFAULT_LABEL_FLOOR, SentenceRETask
from spacy_lmrc.tasks.sentence.vote import fuse_answer, vote_distribution

LABELS = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Message-Topic(e1,e2)", "Other"]


def _example(label: str, text: str = "An example.") -> dict:
    return {"text": text, "head": "a", "tail": "b", "label": label, "similarity": 0.8}


@pytest.fixture
def doc(nlp):
    doc = semeval_sentence_to_doc(
        "The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)", nlp,
        title="7")
    doc._.rag_examples = [_example("Cause-Effect(e2,e1)"), _example("Cause-Effect(e2,e1)"),
                          _example("Other")]
    return doc


def test_vote_is_the_smoothed_share_of_the_examples_labels():
    vote = vote_distribution(["Other", "Other", "Cause-Effect(e1,e2)", "unknown"], LABELS)
    # add-one over 4 labels, 3 counted examples: (n + 1) / 7
    assert vote == pytest.approx({"Cause-Effect(e1,e2)": 2 / 7, "Cause-Effect(e2,e1)": 1 / 7,
                                  "Message-Topic(e1,e2)": 1 / 7, "Other": 3 / 7})
    assert sum(vote.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label set"):
        vote_distribution(["Other"], [])


def test_fusion_reranks_by_the_weighted_product_and_stays_a_distribution():
    vote = vote_distribution(["Other"] * 4, LABELS)  # Other 5/8, the rest 1/8
    answer = [("Cause-Effect(e1,e2)", 0.6), ("Other", 0.3)]
    assert fuse_answer(answer, vote, weight=0.0, floor=0.01)[0][0] == "Cause-Effect(e1,e2)"
    fused = fuse_answer(answer, vote, weight=1.0, floor=0.01)
    assert [name for name, _ in fused][:2] == ["Other", "Cause-Effect(e1,e2)"]
    assert sum(p for _, p in fused) == pytest.approx(1.0)
    # a label below the floor counts as the floor: 0.3 * 5/8 against 0.01 * 1/8
    expected = {"Other": 0.3 * 5 / 8, "Cause-Effect(e1,e2)": 0.6 / 8,
                "Cause-Effect(e2,e1)": 0.01 / 8, "Message-Topic(e1,e2)": 0.01 / 8}
    total = sum(expected.values())
    assert dict(fused) == pytest.approx({k: v / total for k, v in expected.items()})
    # the weight is the vote's exponent
    heavy = dict(fuse_answer(answer, vote, weight=2.0, floor=0.01))
    assert heavy["Other"] / heavy["Cause-Effect(e1,e2)"] == pytest.approx(0.3 * 25 / 0.6)
    assert math.isclose(sum(heavy.values()), 1.0)


def test_fusion_refuses_bad_settings_and_foreign_names():
    vote = vote_distribution(["Other"], LABELS)
    with pytest.raises(ValueError, match="weight"):
        fuse_answer([("Other", 1.0)], vote, weight=-1.0, floor=0.01)
    with pytest.raises(ValueError, match="floor"):
        fuse_answer([("Other", 1.0)], vote, weight=1.0, floor=0.0)
    with pytest.raises(ValueError, match="outside"):
        fuse_answer([("Instrument-Agency(e1,e2)", 1.0)], vote, weight=1.0, floor=0.01)


def test_task_asks_for_the_probable_labels_and_fuses_the_vote(doc):
    task = SentenceRETask(LABELS, use_examples=True, shown_examples=1, vote_weight=1.0,
                          label_floor=0.05, label_names={"Other": "no relation"})
    request, pairs = task.build_request(doc)
    assert request.min_probability == 0.05
    assert len(request.examples) == 1 and request.examples[0]["label"] == "Cause-Effect(e2,e1)"
    stats = ParseStats()
    # the LLM leans to Cause-Effect(e1,e2); two of three examples say (e2,e1)
    relations = task.relations_from_answers(
        doc, pairs, [[("Cause-Effect(e1,e2)", 0.5), ("Cause-Effect(e2,e1)", 0.4)]], stats)
    assert [r["label"] for r in relations] == ["Cause-Effect(e2,e1)"]
    assert 0 < relations[0]["score"] < 1
    assert stats.counts["vote_changed"] == 1 and stats.counts["relations"] == 1
    # a vote for the negative label (display name "no relation") gives no relation
    doc._.rag_examples = [_example("Other")] * 3
    assert task.relations_from_answers(
        doc, pairs, [[("Cause-Effect(e1,e2)", 0.5), ("no relation", 0.4)]], stats) == []
    assert stats.counts["negative"] == 1


def test_simple_query_with_a_vote_reads_the_examples_without_showing_them(doc):
    task = SentenceRETask(LABELS, use_examples=False, vote_weight=0.5)
    request, _ = task.build_request(doc)
    assert request.examples == [] and request.min_probability == DEFAULT_LABEL_FLOOR
    doc._.rag_examples = []
    with pytest.raises(ValueError, match="vote_weight"):
        task.relations_from_answers(doc, [(0, 1)], [[("Other", 1.0)]], ParseStats())


@pytest.mark.parametrize("setting,value", [("shown_examples", -1), ("vote_weight", -0.5),
                                           ("label_floor", 0.0), ("label_floor", 1.5)])
def test_vote_settings_are_checked(setting, value):
    with pytest.raises(ValueError, match=setting):
        SentenceRETask(LABELS, **{setting: value})


def test_a_vote_needs_a_label_floor():
    with pytest.raises(ValueError, match="vote_weight needs a label_floor"):
        SentenceRETask(LABELS, vote_weight=1.0, label_floor=None)


def test_requests_ask_for_the_labels_above_the_floor_unless_greedy(doc):
    make = registry.misc.get("spacy_lmrc.SentenceRETask.v3")
    assert make(labels=LABELS).build_request(doc)[0].min_probability == DEFAULT_LABEL_FLOOR
    assert make(labels=LABELS, label_floor=0.05).build_request(doc)[0].min_probability == 0.05
    assert make(labels=LABELS, label_floor=None).build_request(doc)[0].min_probability is None


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_earlier_versions_decode_the_greedy_label_unless_they_vote(doc, version):
    make = registry.misc.get(f"spacy_lmrc.SentenceRETask.{version}")
    assert make(labels=LABELS).label_floor is None
    assert make(labels=LABELS).build_request(doc)[0].min_probability is None
    voting = make(labels=LABELS, vote_weight=1.0, vote_floor=0.02)
    assert (voting.label_floor, voting.build_request(doc)[0].min_probability) == (0.02, 0.02)


def test_vote_settings_round_trip_and_older_settings_load(doc):
    task = registry.misc.get("spacy_lmrc.SentenceRETask.v3")(
        labels=LABELS, shown_examples=1, vote_weight=1.5, label_floor=0.02)
    config = task.get_config()
    restored = SentenceRETask(["Other"])
    restored.set_config(config)
    assert (restored.shown_examples, restored.vote_weight, restored.label_floor) == (1, 1.5, 0.02)
    assert restored.get_config() == config
    # settings saved before label_floor: the greedy label, or the vote's floor
    older = {k: v for k, v in config.items()
             if k not in ("shown_examples", "vote_weight", "label_floor")}
    restored.set_config(older)
    assert (restored.shown_examples, restored.vote_weight, restored.label_floor) == (None, 0.0,
                                                                                     None)
    restored.set_config({**older, "vote_weight": 1.0, "vote_floor": 0.03})
    assert (restored.vote_weight, restored.label_floor) == (1.0, 0.03)


def test_voting_pipeline_decodes_labels_with_a_tiny_llm(nlp, doc, tiny_llama):
    """End to end through the constrained decoder: every pair gets one label of the set."""
    pipeline = spacy.blank("en")
    pipeline.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v2", "labels": LABELS,
                 "use_examples": False, "vote_weight": 3.0},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_llama},
    })
    copy = input_copy(doc)
    copy._.rag_examples = [_example("Message-Topic(e1,e2)")] * 5
    (out,) = pipeline.pipe([copy])
    rc = pipeline.get_pipe("llm_relation_classifier")
    assert rc.stats.counts["pairs"] == 1
    assert rc.stats.counts["relations"] + rc.stats.counts["negative"] == 1
    # five examples of one label at weight 3 outweigh an untrained model's spread answer
    assert [r["label"] for r in out._.relations] == ["Message-Topic(e1,e2)"]


def test_the_default_decodes_the_most_probable_label_with_a_tiny_llm(doc, tiny_llama):
    """``label_floor`` finds the label of highest probability: the answer is the best of every
    label's probability, as an exhaustive search (a floor far below any label's) gives them."""
    from spacy_lmrc.backends.hf import HFBackend

    backend = HFBackend(tiny_llama)
    task = registry.misc.get("spacy_lmrc.SentenceRETask.v3")(labels=LABELS, use_examples=False)
    request, pairs = task.build_request(doc)
    exhaustive = registry.misc.get("spacy_lmrc.SentenceRETask.v3")(
        labels=LABELS, use_examples=False, label_floor=1e-9).build_request(doc)[0]
    (every_label,), = backend.answer([exhaustive], task.prompt_format)
    assert sorted(name for name, _ in every_label) == sorted(LABELS)
    assert sum(p for _, p in every_label) == pytest.approx(1.0, abs=1e-4)
    best, best_probability = max(every_label, key=lambda item: item[1])
    (answer,), = backend.answer([request], task.prompt_format)
    assert answer[0] == (best, pytest.approx(best_probability, abs=1e-5))
    relations = task.relations_from_answers(doc, pairs, [answer], ParseStats())
    assert [r["label"] for r in relations] == ([] if best == "Other" else [best])

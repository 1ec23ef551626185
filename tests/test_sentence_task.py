"""The sentence-level RE task: its requests, RAG4RE's text prompts and the one-label answer
parser."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import spacy
from spacy.util import registry

from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc, tacred_record_to_doc
from spacy_lmrc.errors import InputError
from spacy_lmrc.llm.parsing import LabelParser, normalise_label
from spacy_lmrc.llm.text import TextFormat
from spacy_lmrc.tasks.base import ParseStats
from spacy_lmrc.tasks.sentence import SentenceRETask

SEMEVAL_LABELS = [f"{t}({d})" for t in ("Cause-Effect", "Component-Whole", "Message-Topic")
                  for d in ("e1,e2", "e2,e1")] + ["Other"]
EXAMPLE = {"text": "The burst has been caused by water hammer pressure.", "head": "burst",
           "tail": "pressure", "label": "Cause-Effect(e2,e1)", "similarity": 0.71}
UNFILLED = re.compile(r"\{\{|\}\}|\{%|%\}|\{[a-z_]+\}")


def _prompts(task, doc, **text_format):
    """The text prompts of ``doc``'s request (what a text-only model is sent)."""
    request, _ = task.build_request(doc)
    return TextFormat(**text_format).prompts(request)


def _read(task, doc, reply, stats, **text_format):
    """Relations from a text model's ``reply`` to the one prompt of ``doc``'s request."""
    request, pairs = task.build_request(doc)
    fmt = TextFormat(**text_format)
    (prompt,) = fmt.prompts(request)
    return task.relations_from_answers(doc, pairs, fmt.read(request, prompt, reply, stats),
                                       stats)


@pytest.fixture
def doc(nlp):
    doc = semeval_sentence_to_doc(
        "The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)", nlp,
        title="0")
    doc._.rag_examples = [EXAMPLE]
    return doc


@pytest.mark.parametrize("template", ["simple_query", "rag4re"])
def test_prompts_are_filled(doc, template):
    task = SentenceRETask(SEMEVAL_LABELS, use_examples=template == "rag4re")
    (unit,) = _prompts(task, doc)
    assert unit.queries == [0]
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
    text = _prompts(SentenceRETask(SEMEVAL_LABELS), doc, show_example_label=True)[0].text
    assert "Example relation: Cause-Effect(e2,e1)" in text
    assert "Example e1 (head): burst." in text
    doc._.rag_examples = [EXAMPLE, {**EXAMPLE, "text": "Another one."}]
    text = _prompts(SentenceRETask(SEMEVAL_LABELS), doc)[0].text
    assert "Example Sentence 1: The burst" in text and "Example Sentence 2: Another one." in text
    assert not UNFILLED.search(text)


def test_rag_template_without_examples_is_an_actionable_error(doc):
    doc._.rag_examples = []
    with pytest.raises(ValueError, match="rag4re_retriever"):
        SentenceRETask(SEMEVAL_LABELS).build_request(doc)


@pytest.mark.parametrize("answer,label,step", [
    ("Cause-Effect(e2,e1)", "Cause-Effect(e2,e1)", "exact"),
    ("  Answer: Cause-Effect(e2,e1).\nbecause ...", "Cause-Effect(e2,e1)", "exact"),
    ("cause-effect (e2, e1)", "Cause-Effect(e2,e1)", "normalised"),
    ("The relation type is Message-Topic(e1,e2) here", "Message-Topic(e1,e2)", "normalised"),
    ("Cause-Efect(e2,e1)", "Cause-Effect(e2,e1)", "fuzzy"),
    ("Other", "Other", "exact"),
    ("Cause-Effect(e1,e2), Component-Whole(e1,e2)", None, "ambiguous"),
    ("I cannot tell.", None, "fallback_negative"),
    ("   \n", None, "empty"),
])
def test_label_parsing_steps(answer, label, step):
    labels = {name: name for name in SEMEVAL_LABELS}
    stats = ParseStats()
    got, score = LabelParser(labels).parse(answer, stats)
    assert got == label
    assert stats.counts[step] == 1
    if step in ("ambiguous", "empty"):
        assert stats.counts["fallback_negative"] == 1
    if step in ("fuzzy", "ambiguous", "fallback_negative"):
        assert stats.samples[step] == [answer]
    assert 0.0 <= score <= 1.0


def test_normalised_names_are_unique_for_semeval_directions():
    assert normalise_label("Cause-Effect(e1,e2)") != normalise_label("Cause-Effect(e2,e1)")


def test_text_answers_and_training_requests(doc):
    task = SentenceRETask(SEMEVAL_LABELS, use_examples=False)
    stats = ParseStats()
    assert _read(task, doc, "Cause-Effect(e2,e1)", stats) == [
        {"head": 0, "tail": 1, "label": "Cause-Effect(e2,e1)", "score": 1.0}]
    assert _read(task, doc, "Other", stats) == []
    assert stats.to_dict() == {"exact": 2, "pairs": 2, "relations": 1, "negative": 1}
    request, targets = task.training_request(doc)
    assert request == task.build_request(doc)[0] and targets == [["Cause-Effect(e2,e1)"]]
    doc._.relations = []
    assert task.training_request(doc)[1] == [["Other"]]


def test_display_names_and_registered_factory(doc, tmp_path):
    path = tmp_path / "relations.json"
    path.write_text(json.dumps({"relation": {"names": SEMEVAL_LABELS}}))
    task = registry.misc.get("spacy_lmrc.SentenceRETask.v1")(
        labels_path=str(path), use_examples=False,
        label_names={"Other": "none of these"})
    assert "none of these" in _prompts(task, doc)[0].text
    stats = ParseStats()
    assert _read(task, doc, "None of these", stats) == []
    assert stats.counts["normalised"] == 1
    assert task.get_config()["label_names"]["Other"] == "none of these"
    with pytest.raises(ValueError, match="not both"):
        registry.misc.get("spacy_lmrc.SentenceRETask.v1")(labels=SEMEVAL_LABELS,
                                                          labels_path=str(path))
    unlabelled = registry.misc.get("spacy_lmrc.SentenceRETask.v1")()
    assert unlabelled.labels == {}
    with pytest.raises(InputError, match="initialize"):
        unlabelled.build_request(doc)


def test_labels_from_initialize(nlp, doc):
    rc = nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1", "use_examples": False},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1",
                    "default": "Cause-Effect(e2,e1)"}})
    assert rc.labels == ()
    nlp.config["initialize"]["components"]["llm_relation_classifier"] = {
        "labels": SEMEVAL_LABELS[:-1]}
    nlp.initialize()
    assert list(rc.labels) == SEMEVAL_LABELS  # the negative label is added
    assert [(r["head"], r["tail"], r["label"]) for r in nlp(input_copy(doc))._.relations] == [
        (0, 1, "Cause-Effect(e2,e1)")]
    rc.initialize(labels={"Cause-Effect(e2,e1)": "caused by"})
    assert rc.label_data == {"Cause-Effect(e2,e1)": "caused by", "Other": "Other"}
    assert "caused by" in _prompts(rc.task, doc)[0].text


def test_labels_from_the_examples_and_a_missing_label_file(nlp, doc, tmp_path):
    from spacy.training import Example

    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1", "use_examples": False},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": "Other"}})
    nlp.initialize(lambda: [Example(input_copy(doc), doc)])
    assert nlp.get_pipe("llm_relation_classifier").label_data == {
        "Cause-Effect(e2,e1)": "Cause-Effect(e2,e1)", "Other": "Other"}
    pending = SentenceRETask(labels_path=str(tmp_path / "missing.json"))
    assert pending.labels == {} and pending.pending_labels_path is not None
    with pytest.raises(InputError, match="not found"):
        pending.build_request(doc)


def test_pairs_rule(nlp, doc):
    task = SentenceRETask(SEMEVAL_LABELS, use_examples=False)
    assert task.select_pairs(doc) == [(0, 1)]  # the sentence's own pair, label (e2, e1) or not
    doc._.relation_candidates = [{"head": 1, "tail": 0, "score": 0.9}]
    assert task.select_pairs(doc) == [(1, 0)]  # a proposer's candidates win
    doc._.relation_candidates = []
    doc._.entities = [*doc._.entities, {**doc._.entities[0], "name": "fire #2"}]
    assert task.select_pairs(doc) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_tacred_labels_and_negative(nlp):
    record = {"token": ["Bill", "Gates", "founded", "Microsoft", "."], "subj_start": 0,
              "subj_end": 1, "obj_start": 3, "obj_end": 3, "subj_type": "PERSON",
              "obj_type": "ORGANIZATION", "relation": "org:founded_by"}
    doc = tacred_record_to_doc(record, nlp, title="t1")
    task = SentenceRETask(["org:founded_by", "per:employee_of"], use_examples=False,
                          negative_label="no_relation")
    text = _prompts(task, doc)[0].text
    assert "no_relation" in text and "e1 (head): Bill Gates." in text
    stats = ParseStats()
    assert _read(task, doc, "no relation", stats) == []
    assert _read(task, doc, "org founded by", stats)[0]["label"] == "org:founded_by"
    assert stats.counts["normalised"] == 2


# structured requests (local models) -----------------------------------------------------------

def _sentences(nlp, rows):
    return [semeval_sentence_to_doc(text, label, nlp, title=str(i))
            for i, (text, label) in enumerate(rows)]


def test_build_request_shape(doc):
    from spacy_lmrc.llm import SentenceFormat

    make = registry.misc.get("spacy_lmrc.SentenceRETask.v1")
    task = make(labels=SEMEVAL_LABELS)
    request, pairs = task.build_request(doc)
    assert pairs == [(0, 1)] and len(request.queries) == 1
    assert request.text == "The fire was caused by a cigarette."
    assert (request.queries[0].head, request.queries[0].tail) == ("fire", "cigarette")
    assert request.answer_space == SEMEVAL_LABELS and "Other" in request.answer_space
    assert request.none_answer is None and request.multi_label is False
    assert request.examples[0]["text"] == EXAMPLE["text"]
    prefix = task.prompt_format.prefix(request)
    assert f"Example: {EXAMPLE['text']}\n" in prefix and "Cause-Effect" not in prefix
    assert prefix.endswith("Sentence: The fire was caused by a cigarette.\n")
    assert task.prompt_format.query(request.queries[0]) == "fire | cigarette =>"
    shown = SentenceFormat(show_example_label=True).prefix(request)
    assert "burst | pressure => Cause-Effect(e2,e1)" in shown
    simple, _ = make(labels=SEMEVAL_LABELS, use_examples=False).build_request(doc)
    assert simple.examples == []
    # the format lists the labels for prompt-only models on request
    listed = make(labels=SEMEVAL_LABELS, prompt_format=SentenceFormat(show_relations=True))
    assert "Message-Topic(e1,e2)" in listed.prompt_format.prefix(listed.build_request(doc)[0])


def test_decoded_answers_are_always_labels(nlp, tiny_llama):
    """An untrained model behind constrained decoding can only answer labels of the set."""
    rows = [("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)"),
            ("The <e1>engine</e1> is part of the <e2>car</e2>.", "Component-Whole(e1,e2)"),
            ("A <e1>book</e1> about <e2>birds</e2>.", "Message-Topic(e1,e2)"),
            ("The <e1>ear</e1> of the rabbit was longer than its <e2>tail</e2>.", "Other")]
    pipeline = spacy.blank("en")
    pipeline.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1", "labels": SEMEVAL_LABELS,
                 "use_examples": False},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_llama},
    })
    docs = list(pipeline.pipe([input_copy(d) for d in _sentences(nlp, rows)]))
    rc = pipeline.get_pipe("llm_relation_classifier")
    assert rc.stats.counts["pairs"] == 4
    assert rc.stats.counts["relations"] + rc.stats.counts["negative"] == 4
    assert not rc.stats.counts["unanswered"]
    for doc in docs:
        assert all(r["label"] in SEMEVAL_LABELS and r["label"] != "Other"
                   and 0 < r["score"] <= 1 for r in doc._.relations)


def test_answers_become_relations_with_the_llm_probability(doc):
    task = SentenceRETask(SEMEVAL_LABELS, threshold=0.5,
                          label_names={"Other": "no relation"})
    stats = ParseStats()
    assert task.relations_from_answers(doc, [(0, 1)], [[("Cause-Effect(e2,e1)", 0.75)]],
                                       stats) == [
        {"head": 0, "tail": 1, "label": "Cause-Effect(e2,e1)", "score": 0.75}]
    assert task.relations_from_answers(doc, [(0, 1)], [[("no relation", 0.9)]], stats) == []
    assert task.relations_from_answers(doc, [(0, 1)], [[("Cause-Effect(e2,e1)", 0.3)]],
                                       stats) == []
    assert task.relations_from_answers(doc, [(0, 1)], [[]], stats) == []
    assert stats.to_dict() == {"pairs": 4, "relations": 1, "negative": 1,
                               "below_threshold": 1, "unanswered": 1}


def _balance_corpus(nlp):
    """12 Other sentences, 6 positives over 6 positive labels (mean count 1)."""
    positives = [(f"A <e1>x{i}</e1> and a <e2>y{i}</e2>.", label)
                 for i, label in enumerate(SEMEVAL_LABELS[:6])]
    negatives = [(f"The <e1>a{i}</e1> met the <e2>b{i}</e2>.", "Other") for i in range(12)]
    return _sentences(nlp, positives + negatives)


def test_training_requests_balance_the_negative_label(nlp):
    import random

    docs = _balance_corpus(nlp)
    task = SentenceRETask(SEMEVAL_LABELS, use_examples=False, negative_ratio=2.0)
    task.prepare_training(docs)
    rng = random.Random(0)
    built = [task.training_request(doc, rng) for doc in docs]
    targets = [t for _, doc_targets in built for t in doc_targets]
    counts = task.training_counts
    assert counts["negative_pairs"] == 12
    kept_negatives = sum(t == ["Other"] for t in targets)
    assert kept_negatives == 12 - counts["negative_pairs_dropped"] < 12
    assert sum(t != ["Other"] for t in targets) == 6  # positives are always kept
    assert all(len(r.queries) == len(t) for r, t in built)
    # every negative is kept without a ratio, and before prepare_training
    for unbalanced in (SentenceRETask(SEMEVAL_LABELS, use_examples=False),
                       SentenceRETask(SEMEVAL_LABELS, use_examples=False,
                                      negative_ratio=2.0)):
        if unbalanced.negative_ratio is None:
            unbalanced.prepare_training(docs)
        for doc in docs:
            unbalanced.training_request(doc)
        assert unbalanced.training_counts == {"negative_pairs": 12}
    doc = docs[0]
    doc._.relations = [{"head": 0, "tail": 1, "label": "Instrument-Agency(e1,e2)", "score": 1}]
    with pytest.raises(InputError, match="not in the task's label set"):
        task.training_request(doc)


def test_packed_training_data_counts_what_balance_drops(nlp, tiny_llama):
    from transformers import AutoTokenizer

    from spacy_lmrc.classifier.training import build_packed_sequences

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    docs = _balance_corpus(nlp)
    make = registry.misc.get("spacy_lmrc.SentenceRETask.v1")
    counts: Counter = Counter()
    sequences = build_packed_sequences(make(labels=SEMEVAL_LABELS, use_examples=False),
                                       docs, tokenizer, counts=counts)
    # the default ratio 2.0 keeps about 2 of the 12 Other sentences
    assert counts["negative_pairs"] == 12 and counts["negative_pairs_dropped"] >= 6
    assert len(sequences) == 18 - counts["negative_pairs_dropped"] == 18 - counts["no_pairs"]
    answers = [tokenizer.decode(seq.target_ids) for seq in sequences]
    assert all(a.endswith(tokenizer.eos_token) for a in answers)
    assert {a.strip().removesuffix(tokenizer.eos_token).strip() for a in answers} <= set(
        SEMEVAL_LABELS)


def test_format_round_trip_through_the_task_settings(doc):
    from spacy_lmrc.llm import SentenceFormat

    fmt = SentenceFormat(instruction="Which relation?", show_example_label=True,
                         show_types=True)
    task = registry.misc.get("spacy_lmrc.SentenceRETask.v1")(
        labels=SEMEVAL_LABELS, prompt_format=fmt, threshold=0.25, negative_ratio=None)
    config = task.get_config()
    assert config["prompt_format"] == fmt.config()
    restored = SentenceRETask(["Other"])
    restored.set_config(json.loads(json.dumps(config)))
    assert restored.prompt_format.config() == fmt.config()
    assert (restored.threshold, restored.negative_ratio) == (0.25, None)
    assert restored.get_config() == config
    request, _ = restored.build_request(doc)
    assert restored.prompt_format.prefix(request) == fmt.prefix(request)
    query = restored.prompt_format.query(request.queries[0])
    assert query == "fire (ENTITY) | cigarette (ENTITY) =>"
    # a classifier folder of the earlier layout names its prompt by template
    earlier = {k: v for k, v in config.items() if k != "use_examples"}
    restored.set_config({**earlier, "template": "simple_query"})
    assert restored.use_examples is False


def test_sentence_task_fine_tunes_packed_in_batches(nlp, tiny_llama, tmp_path):
    from spacy_lmrc.backends.hf import HFBackend
    from spacy_lmrc.classifier import RCModel
    from spacy_lmrc.classifier.training import FinetuneSettings, finetune

    task = registry.misc.get("spacy_lmrc.SentenceRETask.v1")(labels=SEMEVAL_LABELS,
                                                             use_examples=False)
    docs = _balance_corpus(nlp)
    summary = finetune(task, docs, tmp_path / "model", FinetuneSettings(
        base_model=tiny_llama, method="full", max_steps=2, batch_size=4, warmup_steps=0,
        learning_rate=1e-3, save_every=10))
    assert summary["steps"] == 2
    assert summary["data_counts"]["negative_pairs"] == 12
    assert summary["task"]["prompt_format"] == task.prompt_format.config()
    classifier = RCModel.from_pretrained(tmp_path / "model")
    assert classifier.task_kind == "sentence"
    assert classifier.task().get_config() == task.get_config()
    # the RAG4RE task (retrieved examples in the request) shares the trained format
    rag_task = classifier.task_for(
        registry.misc.get("spacy_lmrc.SentenceRETask.v1")(labels=SEMEVAL_LABELS))
    backend = HFBackend()
    backend.use_classifier(classifier)
    docs[0]._.rag_examples = [EXAMPLE]
    (answers,) = backend.answer([rag_task.build_request(docs[0])[0]], rag_task.prompt_format)
    assert len(answers) == 1 and answers[0][0][0] in SEMEVAL_LABELS
